"""Do two trees' parse workers produce the same records? Byte for byte.

Runs ``connectors.parse_worker._run`` (parse, enrich, identity, JSON, key,
partition) of each tree, in a child process per tree, over the same input
files and compares every record it hands the producer: dead letter or not,
key, partition and the value bytes, plus the counts and the checkpoint of
the last batch. The clock is frozen in both children (``ctx.now``, a dead
letter's ``received_at``, the event-time gate's clock), so the only
differences left are the trees'.

Inputs per format: the connector bench's generated lines (bench_connectors
FORMATS), the vendor corpus (tests/corpus/*.yaml) of every format, and
malformed variants of those lines (truncated, characters dropped, digits
changed, not UTF-8, oversized, blank, a byte order mark).

    python bench/compare_trees.py OLD_TREE [--new NEW_TREE] [--lines 3000] [FORMAT ...]

Use it when a change must keep the connectors' output identical (a speed-up):
the new tree defaults to the one this script sits in. Exits 1 on a difference.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from stub_pipes import StartControl, offline_settings

ROOT = Path(__file__).resolve().parent.parent
FIXED_NOW = "2026-12-01T03:00:00+00:00"


# -- inputs (parent) -------------------------------------------------------------------


def _corpus_lines() -> dict[tuple[str, str], list[str]]:
    import yaml

    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted((ROOT / "tests" / "corpus").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in doc["cases"]:
            key = (doc["source"], case.get("format", doc["format"]))
            out.setdefault(key, []).extend(str(x) for x in case.get("lines") or [case["line"]])
    return out


def _malformed(lines: list[str], rng: random.Random) -> list[bytes]:
    """Broken variants of some lines: what a parser meets on a bad day."""
    out: list[bytes] = [b"", b"   ", b"garbage", b"\xff\xfe not utf-8 \x80", b"x" * 70_000]
    picks = rng.sample(lines, min(len(lines), 60))
    for line in picks:
        n = len(line)
        out.append(line[: n // 2].encode())
        out.append(line[: n - 1].encode())
        cut = rng.randrange(n) if n else 0
        out.append((line[:cut] + line[cut + 1 :]).encode())
        chars = list(line)
        for _ in range(3):
            i = rng.randrange(n) if n else 0
            if n and chars[i].isdigit():
                chars[i] = rng.choice("09x-")
        out.append("".join(chars).encode())
        out.append(line.replace('"', "", 1).encode())
        out.append(line.replace("=", " = ", 1).encode())
        out.append(("\ufeff" + line).encode())
        out.append(line.encode() + b"\xc3")
        out.append(line.replace(" ", "  ", 2).encode())
        out.append(line.replace("10.", "300.", 1).encode())
    return out


def make_inputs(tmp: Path, lines: int, only: list[str]) -> list[tuple[str, str, str]]:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_connectors import FORMATS

    rng = random.Random(19)
    corpus = _corpus_lines()
    keys = list(dict.fromkeys([*FORMATS, *corpus]))
    manifest = []
    for source, fmt in keys:
        if only and fmt not in only:
            continue
        good: list[str] = []
        gen = FORMATS.get((source, fmt))
        if gen is not None:
            good += [gen(i) for i in range(lines)]
        good += corpus.get((source, fmt), [])
        data = [g.encode() for g in good] + _malformed(good, rng)
        path = tmp / f"{source}-{fmt}.log"
        path.write_bytes(b"\n".join(d.replace(b"\n", b" ") for d in data) + b"\n")
        manifest.append((source, fmt, str(path)))
    return manifest


# -- one tree (child) ------------------------------------------------------------------


class _Out:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def send_bytes(self, data: bytes) -> None:
        self.messages.append(data)


def run_tree(tree: Path, manifest: list[tuple[str, str, str]], out: Path) -> None:
    sys.path.insert(0, str(tree))
    from datetime import datetime

    import connectors.base
    import connectors.parse_worker as parse_worker
    import connectors.pipeline
    import connectors.timegate
    from connectors.inputs.file import FileInput
    from zonewatch.logs import configure_logging

    fixed = datetime.fromisoformat(FIXED_NOW)

    class _Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return fixed if tz is not None else fixed.replace(tzinfo=None)

    for module in (connectors.base, connectors.pipeline, parse_worker):
        module.datetime = _Frozen  # type: ignore[attr-defined]
    # the event-time gate's clock
    connectors.timegate.EventTimeGate.__init__.__defaults__ = (fixed.timestamp,)
    configure_logging("error", json=False)
    results: dict[str, Any] = {}
    for source, fmt, path in manifest:
        tmp = Path(tempfile.mkdtemp(prefix="zw-compare-"))
        settings = offline_settings(tree / "rules/zones.yaml", tmp / "cp", "cmp")
        partitions = {settings.kafka.events_topic(source): [0, 1, 2]}
        spec = parse_worker.WorkerSpec(settings, source, fmt, None, FileInput(path))
        sink = _Out()
        parse_worker._run(spec, StartControl(partitions), sink)  # type: ignore[arg-type]
        records: list[Any] = []
        last: Any = None
        for message in sink.messages:
            _, batch = pickle.loads(message)
            records.extend(batch.records)
            if batch.stats is not None:
                cp = dict(batch.checkpoint or {})
                cp.pop("state_at", None)
                last = (batch.stats.as_dict() | {"seconds": 0}, repr(cp.get("state")))
        results[f"{source}/{fmt}"] = (records, last)
    out.write_bytes(pickle.dumps(results))


# -- compare (parent) -------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("--new", type=Path, default=ROOT, help="default: this script's tree")
    ap.add_argument("--lines", type=int, default=3000, help="bench lines per format")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("formats", nargs="*")
    args = ap.parse_args()
    if args.child:
        tree, manifest, out = args.child
        run_tree(Path(tree), json.loads(Path(manifest).read_text()), Path(out))
        return
    tmp = Path(tempfile.mkdtemp(prefix="zw-compare-"))
    manifest = make_inputs(tmp, args.lines, args.formats)
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    found = {}
    for name, tree in (("old", args.old), ("new", args.new)):
        out = tmp / f"{name}.pickle"
        subprocess.run(
            [sys.executable, __file__, str(tree), "--child", str(tree.resolve()),
             str(tmp / "manifest.json"), str(out)],
            check=True,
            cwd=tree,
        )  # fmt: skip
        found[name] = pickle.loads(out.read_bytes())
    differ = 0
    for key, (old_records, old_last) in found["old"].items():
        new_records, new_last = found["new"][key]
        dead = sum(1 for r in old_records if r[0])
        same = old_records == new_records and old_last == new_last
        print(f"{key:<24}{len(old_records):>7} records ({dead} dead letters): "
              f"{'identical' if same else 'DIFFERENT'}")  # fmt: skip
        if not same:
            differ += 1
            for i, (a, b) in enumerate(zip(old_records, new_records, strict=False)):
                if a != b:
                    print(f"  first difference at record {i}:\n    old {a!r}\n    new {b!r}")
                    break
            if len(old_records) != len(new_records):
                print(f"  {len(old_records)} records before, {len(new_records)} now")
            if old_last != new_last:
                print(f"  counts/state: {old_last!r} -> {new_last!r}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
