"""correlator: consume normalized events, match Sigma rules and correlations, store and send alerts."""
