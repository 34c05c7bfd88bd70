"""The parse worker's CPU per line, without Kafka and without a second process.

Runs ``connectors.parse_worker._run`` (read, parse, enrich, identity, JSON,
key and partition, batches pickled) over the connector bench's lines, in this
process, with a pipe stub that only counts what it is given. The figure is
what the worker costs a core per line: on the shared machine the
connector's rate follows the producing process's CPU plus this (see
bench/README.md). Not a ``bench_*`` script: ``make bench`` does not run it.

    python bench/worker_cpu.py [--lines 30000] [--runs 3] [FORMAT ...]

Old against new: run it from each tree in alternation (it imports the
tree it sits in).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_connectors import FORMATS  # noqa: E402
from stub_pipes import StartControl, offline_settings  # noqa: E402

from connectors import parse_worker  # noqa: E402
from connectors.inputs.file import FileInput  # noqa: E402
from zonewatch.logs import configure_logging  # noqa: E402


class _Out:
    """The data pipe: counts batches and bytes."""

    def __init__(self) -> None:
        self.batches = 0
        self.size = 0

    def send_bytes(self, data: bytes) -> None:
        self.batches += 1
        self.size += len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--lines", type=int, default=30_000)
    ap.add_argument("--runs", type=int, default=3, help="the best of this many runs")
    ap.add_argument("formats", nargs="*")
    args = ap.parse_args()
    configure_logging("warning", json=False)
    tmp = Path(tempfile.mkdtemp(prefix="zw-worker-cpu-"))
    settings = offline_settings(ROOT / "rules/zones.yaml", tmp / "cp", "bench")
    print(f"{'format':<22}{'CPU-us/line':>12}{'lines/s':>10}{'batches':>9}{'MB':>6}")
    for (source, fmt), gen in FORMATS.items():
        if args.formats and fmt not in args.formats:
            continue
        path = tmp / f"{fmt}.log"
        path.write_text("\n".join(gen(i) for i in range(args.lines)) + "\n")
        best = float("inf")
        # three partitions, as ensure_topics makes them: keys cost their lookup
        partitions = {settings.kafka.events_topic(source): [0, 1, 2]}
        out = _Out()
        for _ in range(args.runs):
            spec = parse_worker.WorkerSpec(settings, source, fmt, None, FileInput(path))
            out = _Out()
            start = time.process_time()
            parse_worker._run(spec, StartControl(partitions), out)  # type: ignore[arg-type]
            best = min(best, time.process_time() - start)
        print(
            f"{source + '/' + fmt:<22}{best / args.lines * 1e6:>12.1f}"
            f"{args.lines / best:>10,.0f}{out.batches:>9}{out.size / 2**20:>6.0f}"
        )


if __name__ == "__main__":
    main()
