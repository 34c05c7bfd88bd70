"""The vendor corpus (tests/corpus/*.yaml): lines written from each vendor's own
documentation, with the ECS values its field definitions call for. Every case
must parse (or be refused) as expected, with its format named and with
``--format auto``; ``python -m tests.corpus_check`` prints the per-format table.
"""

from __future__ import annotations

import pytest

from tests.corpus_check import Case, load, run, summarize

CASES = load()


def _ids(case: Case) -> str:
    return f"{case.file}::{case.id}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_case_with_its_format(case: Case) -> None:
    result = run(case)
    assert not result.problems, "\n".join(result.problems)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_case_with_format_auto(case: Case) -> None:
    """Each case is a stream of its own: auto-detection must pick the format
    the case names, and yield the same values."""
    result = run(case, "auto")
    assert not result.problems, "\n".join(result.problems)


def test_the_corpus_covers_every_format_that_can_be_sniffed() -> None:
    from connectors.base import FORMATS
    from connectors.pipeline import formats_of

    for source in ("firewall", "gateway", "vdi", "intune", "identity"):
        formats_of(source)
    covered = set(summarize([run(c) for c in CASES]))
    sniffed = {f"{src}/{name}" for (src, name), f in FORMATS.items() if f.sniff is not None}
    # CEF is one parser registered for two sources; its corpus runs as gateway
    assert sniffed - covered <= {"firewall/cef"}


def test_coverage_doc_lists_exactly_the_cisco_ids_the_parser_reads() -> None:
    import re
    from pathlib import Path

    from connectors.cisco_asa.catalogue import _MESSAGES
    from connectors.cisco_asa.ftd import _FTD_ACTION_NAMES

    doc = (Path(__file__).resolve().parent.parent / "connectors" / "COVERAGE.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `firewall/asa`"))
    listed: set[str] = set()
    for a, b in re.findall(r"\b(\d{6})(?:–(\d{6}))?\b", row.split("|")[3]):
        if b:
            listed |= {str(n) for n in range(int(a), int(b) + 1)}
        else:
            listed.add(a)
    read = {k for k in _MESSAGES if k.isdigit()} | set(_FTD_ACTION_NAMES)
    assert listed == read
