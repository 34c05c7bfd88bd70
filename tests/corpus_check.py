"""Runs the vendor corpus (tests/corpus/*.yaml) and measures what it finds.

Each corpus file holds lines written from one vendor's own documentation
(message catalogues, field descriptions, feed templates) with the ECS
values the vendor's field definitions call for. A case is one line (or a
short stream, for formats with headers or state) and either the events it
must yield (``expect``: a list of dotted-field -> value maps, one per event;
a value of ``null`` means the field must be absent) or ``refuse``: a
fragment of the reason it must be dead-lettered with (``auto_format``: the
format that reads the line instead under ``--format auto``).

``python -m tests.corpus_check [--before DIR]`` prints, per format, the
lines, the share parsed right and the share of expected fields that agree;
``--before`` runs a checkout of an older tree the same way, for a
before/after table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


@dataclass
class Case:
    file: str
    source: str
    format: str
    id: str
    lines: list[str]
    expect: list[dict[str, Any]] | None
    refuse: str | None
    timezone: str
    encoding: str
    now: datetime
    auto_format: str | None = None  # under --format auto another format reads it


@dataclass
class Result:
    case: Case
    lines: int = 0
    parsed: int = 0  # lines whose outcome (events or refusal) was right
    fields: int = 0
    agreed: int = 0
    problems: list[str] = field(default_factory=list)


def load(corpus: Path = CORPUS) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(corpus.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for i, raw in enumerate(doc["cases"]):
            lines = raw.get("lines") or [raw["line"]]
            expect = raw.get("expect")
            if isinstance(expect, dict):
                expect = [expect]
            now = raw.get("now", doc.get("now"))
            cases.append(
                Case(
                    file=path.name,
                    source=doc["source"],
                    format=raw.get("format", doc["format"]),
                    id=str(raw.get("id", i)),
                    lines=[str(x) for x in lines],
                    expect=expect,
                    refuse=raw.get("refuse"),
                    timezone=raw.get("timezone", doc.get("timezone", "Asia/Tokyo")),
                    encoding=raw.get("encoding", doc.get("encoding", "utf-8")),
                    now=datetime.fromisoformat(now.replace("Z", "+00:00")) if now else NOW,
                    auto_format=raw.get("auto_format"),
                )
            )
    return cases


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def run(case: Case, fmt: str | None = None, root: Path | None = None) -> Result:
    """Parse the case through a Pipeline (``fmt``: the case's format or auto)."""
    pipeline_mod = importlib.import_module("connectors.pipeline")
    records = importlib.import_module("connectors.inputs")
    kwargs: dict[str, Any] = {}
    if "encoding" in pipeline_mod.Pipeline.__init__.__code__.co_varnames:
        kwargs["encoding"] = case.encoding
    pipeline = pipeline_mod.Pipeline(
        case.source,
        fmt or case.format,
        zones=None,
        timezone=ZoneInfo(case.timezone),
        input_name=case.file,
        **kwargs,
    )
    pipeline.ctx.now = case.now
    result = Result(case, lines=len(case.lines))
    events: list[dict[str, Any]] = []
    refused: list[str] = []
    for i, line in enumerate(case.lines, 1):
        data = line.encode(case.encoding if case.encoding != "auto" else "utf-8")
        try:
            found, letter = pipeline.handle(records.Record(data, position=i))
        except Exception as exc:  # an older tree may crash: count it as not parsed
            refused.append(f"crash: {type(exc).__name__}: {exc}")
            continue
        if letter is not None:
            refused.append(letter.reason)
        events += found
    if fmt == "auto" and case.auto_format is not None:
        modules = {e["event"]["module"] for e in events}
        if events and not refused and modules == {case.auto_format}:
            result.parsed = result.lines
        else:
            result.problems.append(f"expected {case.auto_format} to read it: {refused} {modules}")
        return result
    if case.refuse is not None:
        # under auto a refusal may name the detector rather than the parser
        reason_ok = fmt == "auto" or all(case.refuse in r for r in refused)
        if refused and reason_ok and not events:
            result.parsed = result.lines
        else:
            result.problems.append(f"expected a refusal ({case.refuse!r}), got {refused} {events}")
        return result
    expect = case.expect or []
    if refused:
        result.problems.append(f"refused: {refused}")
    result.parsed = result.lines - len(refused)
    result.fields = sum(len(e) for e in expect)
    if len(events) != len(expect):
        result.problems.append(f"{len(events)} events, expected {len(expect)}")
    for n, (want, got) in enumerate(zip(expect, events, strict=False)):
        flat = flatten(got)
        for key, value in want.items():
            have = flat.get(key)
            if have == value or (isinstance(value, list) and have == value):
                result.agreed += 1
            else:
                result.problems.append(f"event {n} {key}: want {value!r} got {have!r}")
    return result


def summarize(results: list[Result]) -> dict[str, tuple[int, int, int, int]]:
    """format -> (lines, parsed right, expected fields, agreeing fields)."""
    table: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in results:
        row = table[f"{r.case.source}/{r.case.format}"]
        row[0] += r.lines
        row[1] += r.parsed
        row[2] += r.fields
        row[3] += r.agreed
    return {k: (v[0], v[1], v[2], v[3]) for k, v in sorted(table.items())}


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f}%" if b else "    -"


def _measure(tree: Path | None, auto: bool, verbose: bool) -> dict[str, tuple[int, ...]]:
    if tree is not None:
        sys.path.insert(0, str(tree))
    results = [run(c, "auto" if auto else None) for c in load()]
    if verbose:
        for r in results:
            for p in r.problems:
                print(f"{tree or 'now'} {r.case.file} {r.case.id}: {p}", file=sys.stderr)
    return summarize(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--before", type=Path, help="an older tree to run the same corpus on")
    ap.add_argument("--tree", type=Path, help=argparse.SUPPRESS)  # the --before child
    ap.add_argument("--auto", action="store_true", help="parse with --format auto")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.tree is not None:
        json.dump(_measure(args.tree, args.auto, args.verbose), sys.stdout)
        return
    columns: list[tuple[str, dict[str, tuple[int, ...]]]] = []
    if args.before is not None:
        cmd = [sys.executable, __file__, "--tree", str(args.before)]
        cmd += ["--auto"] if args.auto else []
        cmd += ["--verbose"] if args.verbose else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        if args.verbose:
            print(out.stderr, end="", file=sys.stderr)
        columns.append(("before", {k: tuple(v) for k, v in json.loads(out.stdout).items()}))
    columns.append(("now", _measure(None, args.auto, args.verbose)))
    header = f"{'format':<20}{'lines':>6}"
    for name, _ in columns:
        header += f"{name + ' parsed':>14}{name + ' fields':>14}"
    print(header)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for fmt in columns[-1][1]:
        lines = columns[-1][1][fmt][0]
        row = f"{fmt:<20}{lines:>6}"
        for name, table in columns:
            n, ok, f, a = table.get(fmt, (lines, 0, columns[-1][1][fmt][2], 0))
            row += f"{_pct(ok, n):>14}{_pct(a, f):>14}"
            t = totals[name]
            t[0], t[1], t[2], t[3] = t[0] + n, t[1] + ok, t[2] + f, t[3] + a
        print(row)
    row = f"{'all':<20}{totals[columns[-1][0]][0]:>6}"
    for name, _ in columns:
        n, ok, f, a = totals[name]
        row += f"{_pct(ok, n):>14}{_pct(a, f):>14}"
    print(row)


if __name__ == "__main__":
    main()
