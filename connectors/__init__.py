"""Connectors: vendor log lines -> normalized ECS events (tagged with zones) -> Kafka.

Parsing (one module per source, formats as functions) is pure; inputs
(files, syslog, Graph) and delivery (Kafka) are I/O modules beside it.
"""
