"""Interpreter settings for a long-running ``zonewatch correlate``.

Applied once after start-up (rules loaded, state restored), by the CLI and by
the benchmarks that measure the loop as it runs in production.
"""

from __future__ import annotations

import gc
import sys

# How often (seconds) a thread holding the GIL is asked to hand it over, when
# another waits; Python's default is 5 ms. DuckDB releases the GIL while it
# stores a batch on the store's writer thread (``AlertStore.submit``) but
# takes it back many times per write, and with 5 ms each of those waited
# behind the loop's thread: the two did not overlap at all (wall time equal
# to CPU time). At 0.1 ms they do.
SWITCH_INTERVAL_S = 0.0001


def tune_process() -> None:
    """Collect less often and keep long-lived objects out of collections;
    let the store's writer thread run beside the loop."""
    # Long-lived state (windows, rules) would be rescanned by every full
    # collection; freeze what start-up built and collect less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
