"""zonewatch base: configuration, errors, logging, Kafka plumbing, models,
zones and time bounds, shared by every other package.

The two working packages, :mod:`connectors` and :mod:`correlator`, depend on
this one and never on each other. The application (the ``zonewatch``
command, the demo, the embedded broker launcher) lives in
:mod:`zonewatch.app`, on top of everything.
"""

__version__ = "0.1.0"
