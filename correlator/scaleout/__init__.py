"""Several correlators in one consumer group (``zonewatch correlate --scale-out``).

``records``: what goes over the internal hits and changelog topics (pure);
``shard``: one shard's input merge and replay filter (pure);
``stream``: the repartitioned stream loop (Kafka, DuckDB).
"""
