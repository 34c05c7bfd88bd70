"""Start-up: wall time of `zonewatch --help` and `zonewatch match --help` against
`python -c pass` (the interpreter's own start-up), measured in this run.

Each figure is the median of ``--rounds`` runs, the three commands run back to
back in each round; the target is `zonewatch --help` at most 0.25 s above
`python -c pass`. Wall time, as a user waits for it.

    python bench/bench_startup.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    args, _ = parser.parse_known_args()
    script = Path(sys.executable).parent / "zonewatch"
    zonewatch = [str(script)] if script.exists() else [shutil.which("zonewatch") or "zonewatch"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "zonewatch --help": [*zonewatch, "--help"],
        "zonewatch match --help": [*zonewatch, "match", "--help"],
    }
    for argv in commands.values():  # warm the file cache
        wall(argv)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, argv in commands.items():
            times[name].append(wall(argv))
    base = statistics.median(times["python -c pass"])
    print(f"{args.rounds} rounds, medians of wall time")
    for name, values in times.items():
        med = statistics.median(values)
        extra = "" if name.startswith("python") else f"  (+{med - base:.3f} s over python)"
        print(f"{name:24}: {med:.3f} s{extra}")
    over = statistics.median(times["zonewatch --help"]) - base
    print(f"zonewatch --help over python -c pass: {over:.3f} s (target <= 0.25 s)")


if __name__ == "__main__":
    main()
