"""correlator: consume normalized events, match Sigma rules and correlations,
store alerts and send them to Teams."""
