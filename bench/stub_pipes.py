"""A stand-in for the parse worker's control pipe, for running
``connectors.parse_worker._run`` in-process (worker_cpu.py, compare_trees.py).
No imports: compare_trees.py loads it beside another tree's connectors."""

from __future__ import annotations

from typing import Any


class StartControl:
    """The parent's control pipe: "start" from the beginning, never "stop"."""

    def __init__(self, partitions: dict[str, list[int]]):
        self.partitions = partitions

    def recv(self) -> tuple[Any, ...]:
        return ("start", None, self.partitions)

    def poll(self) -> bool:
        return False


def offline_settings(zones_file: Any, checkpoint_dir: Any, prefix: str) -> Any:
    """Settings for a parse worker run in-process: no broker is reached, the
    samples' recorded days are not too old. ``zonewatch`` is imported at the
    call, from whichever tree is on ``sys.path`` then."""
    from zonewatch.config import KafkaSettings, Settings

    return Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9", topic_prefix=prefix),
        connectors={
            "zones_file": zones_file,
            "checkpoint_dir": checkpoint_dir,
            "max_past_horizon_days": None,
        },
    )
