"""Several correlators in one consumer group (``zonewatch correlate --scale-out``).

``records``: what goes over the internal hits and changelog topics (pure);
``shard``: one shard's input merge and replay filter (pure);
``changelog``: each shard's state in the changelog topic;
``outgoing``: the hits a member gathers per shard, and the watermarks it
declares (pure);
``stage``: the repartitioned correlation stage of the stream loop (Kafka, DuckDB).
"""
