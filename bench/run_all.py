"""Run every benchmark in this folder, one after another, and print their figures.

Benchmarks print figures and ratios against a baseline measured in the same
run; they never pass or fail on speed. Run one alone with
``python bench/bench_<name>.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, str(script), *sys.argv[1:]], cwd=HERE.parent)
        print(f"--- {script.stem}: {time.monotonic() - started:.1f} s", flush=True)
        if proc.returncode != 0:
            failed.append(script.stem)
    if failed:
        print(f"\nbenchmarks that crashed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
