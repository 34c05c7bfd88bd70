"""zonewatch core: configuration, errors, logging, Kafka plumbing and the CLI.

The two working packages, :mod:`connectors` and :mod:`correlator`, depend on
this one and never on each other.
"""

__version__ = "0.1.0"
