"""Rule hot reload: watch the rule files, ``zones.yaml`` and the placeholder
file, and ask the running loop to reload when one of them changes.

The watcher only asks (``on_change``, which is ``StreamCorrelator.request_reload``,
the same request SIGHUP makes); the loop reloads between two batches, and
``CorrelatorService.reload_rules`` refuses a broken edit while the running
rules go on. Editors save in bursts (a temporary file, a rename, a chmod):
changes are gathered until ``debounce_s`` pass without one, so a save is one
reload.

Folders are watched recursively; a single file is watched through its
folder, because editors replace a file by renaming another over it and a
watch on the file itself would end with the first save.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from zonewatch.logs import get_logger

log = get_logger(__name__)

RULE_SUFFIXES = (".yml", ".yaml")
# The longest a burst of changes is gathered before the reload is asked for
# anyway (a tool rewriting a large rule pack file by file).
MAX_GATHER_MS = 5_000
# How often the watcher looks at its stop flag while nothing changes.
STOP_CHECK_MS = 500


class RuleWatcher:
    """A daemon thread that calls ``on_change(paths)`` after a quiet
    ``debounce_s`` following changes to the watched rule files."""

    def __init__(
        self,
        rule_paths: Iterable[Path],
        files: Iterable[Path | None],
        on_change: Callable[[list[str]], None],
        debounce_s: float = 0.5,
    ) -> None:
        self.folders = [Path(p).resolve() for p in rule_paths if Path(p).is_dir()]
        # Single files: rule files named on --rules, zones.yaml, placeholders.
        self.files = {
            Path(p).resolve()
            for p in [*rule_paths, *files]
            if p is not None and not Path(p).is_dir()
        }
        self.on_change = on_change
        self.debounce_ms = max(1, int(debounce_s * 1000))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def roots(self) -> list[Path]:
        """What the OS watches: the folders, and the folder of each file."""
        out: list[Path] = list(self.folders)
        for file in self.files:
            if file.parent.is_dir() and not any(_within(file, f) for f in self.folders):
                out.append(file.parent)
        return sorted(set(out))

    def wanted(self, path: str) -> bool:
        """Whether a change to ``path`` concerns the rules."""
        p = Path(path)
        if p in self.files:
            return True
        return p.suffix in RULE_SUFFIXES and any(_within(p, f) for f in self.folders)

    def start(self) -> RuleWatcher:
        roots = self.roots()
        if not roots:
            log.warning("rules_watch_off", reason="no rule folder or file to watch")
            return self
        self._thread = threading.Thread(
            target=self._run, args=(roots,), name="zonewatch-rulewatch", daemon=True
        )
        self._thread.start()
        log.info("rules_watching", paths=[str(r) for r in roots], debounce_ms=self.debounce_ms)
        return self

    def stop(self) -> None:
        """Stop watching. Not waited for: the thread notices within
        ``STOP_CHECK_MS`` and asks nothing more of the loop."""
        self._stop.set()
        self._thread = None

    def _run(self, roots: Sequence[Path]) -> None:
        from watchfiles import watch

        try:
            for changes in watch(
                *roots,
                watch_filter=lambda _change, path: self.wanted(path),
                debounce=max(MAX_GATHER_MS, self.debounce_ms),
                step=self.debounce_ms,
                stop_event=self._stop,
                rust_timeout=STOP_CHECK_MS,
                raise_interrupt=False,
            ):
                if self._stop.is_set():
                    return
                changed = sorted({path for _change, path in changes})
                log.info("rules_changed", files=changed)
                self.on_change(changed)
        except Exception as exc:  # watching is a convenience: SIGHUP still works
            log.error(
                "rules_watch_failed",
                error=f"{type(exc).__name__}: {str(exc)[:300]}",
                consequence="rule edits are no longer picked up; reload with SIGHUP",
            )


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
