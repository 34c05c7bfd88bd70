"""The Python the detection rules compile to, as a person reads it.

``zonewatch rules check --show-code`` prints it; each rule's test has a
comment naming the rule; long expressions are wrapped (and mean the same);
tracebacks through it show its lines; compile errors point at the YAML line.
Golden snapshots pin the code of three tiny rules: when a change to the
compiler alters them on purpose, rewrite them with
``ZONEWATCH_UPDATE_GOLDEN=1 pytest tests/test_codegen.py`` and review the diff.
"""

from __future__ import annotations

import ast
import gc
import linecache
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from correlator.detection import load_rules, rules_from_yaml
from zonewatch.app.cli import cli
from zonewatch.pysource import WIDTH, wrap

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "data" / "codegen"

TINY = {
    # A rule with literals: a small "cluster" function the prefilter wakes.
    "curl_to_paste_site": """\
title: Curl to paste site
id: 9d000000-0000-4000-8000-000000000001
logsource: {category: proxy}
detection:
    selection:
        c-useragent|startswith: 'curl/'
        cs-host|endswith: 'pastebin.com'
    condition: selection
level: high
""",
    # Networks, numbers and a filter: tested in the entry function itself.
    "admin_ports_from_core": """\
title: Admin ports opened from the core zone
id: 9d000000-0000-4000-8000-000000000002
logsource: {product: zonewatch, service: firewall}
detection:
    selection:
        source.ip|cidr: [10.10.0.0/16, 10.11.0.0/16]
        destination.port: [22, 3389]
    filter_jump_host:
        source.ip: 10.10.0.5
    condition: selection and not filter_jump_host
level: medium
""",
    # Two rules sharing a test: it runs once, each rule keeps its comment.
    "two_rules_one_crossing": """\
title: Denied VDI to LGWAN
id: 9d000000-0000-4000-8000-000000000003
logsource: {product: zonewatch, service: firewall}
detection:
    sel: {zone.crossing: vdi->lgwan, event.outcome: failure}
    condition: sel
level: low
---
title: SMB from VDI to LGWAN
id: 9d000000-0000-4000-8000-000000000004
logsource: {product: zonewatch, service: firewall}
detection:
    sel: {zone.crossing: vdi->lgwan, destination.port: 445}
    condition: sel
level: high
""",
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_generated_code_of_tiny_rules_matches_its_snapshot(name: str) -> None:
    rs = rules_from_yaml(TINY[name], path=f"{name}.yml", eager=True)
    assert rs.errors == []
    code = rs.source_code() + "\n"
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("ZONEWATCH_UPDATE_GOLDEN"):
        golden.write_text(code, encoding="utf-8")
    assert code == golden.read_text(encoding="utf-8")


def test_each_rule_is_named_before_its_test() -> None:
    code = rules_from_yaml(TINY["two_rules_one_crossing"], path="x.yml", eager=True).source_code()
    assert code.count("== 'vdi->lgwan'") == 1  # the shared test
    for line, (title, ident) in (
        (1, ("Denied VDI to LGWAN", "9d000000-0000-4000-8000-000000000003")),
        (9, ("SMB from VDI to LGWAN", "9d000000-0000-4000-8000-000000000004")),
    ):
        assert f"# {title}\n" in code
        assert f"# rule {ident} at x.yml:{line}\n" in code


def _functions(rs: Any) -> list[str]:
    return [src for _, g in rs._sources for src in (g.main, *(s for _, s, _ in g.clusters))]


@pytest.mark.parametrize(
    "folder", [ROOT / "rules", ROOT.parent / "shared" / "sigma" / "sigmahq" / "rules" / "web"]
)
def test_wrapped_code_is_the_same_program_within_the_width(folder: Path) -> None:
    if not folder.exists():
        pytest.skip(f"{folder} is not here")
    sources = _functions(load_rules([folder], eager=True))
    assert sources
    for source in sources:
        wrapped = wrap(source)
        assert ast.dump(ast.parse(wrapped)) == ast.dump(ast.parse(source))
        for line in wrapped.splitlines():
            # Only a line holding one long literal or a comment may stay wide.
            if len(line) > WIDTH and not line.lstrip().startswith("#"):
                assert any(len(t) > 40 for t in line.split("'")[1::2]), line


def test_a_traceback_through_generated_code_shows_the_line() -> None:
    rs = rules_from_yaml(TINY["curl_to_paste_site"])
    (fn,) = rs._routes["gateway"]

    def broken(value: Any) -> Any:
        raise RuntimeError("lowering failed")

    fn.__globals__["_lower"] = broken  # called for a list-valued field
    with pytest.raises(RuntimeError) as caught:
        rs.match({"event": {"dataset": "gateway"}, "url": {"domain": ["a", "b"]}})
    text = "".join(traceback.format_exception(caught.value))
    assert "<zonewatch rules _match_group0 #" in text
    assert "else (None if h0 is None else _lower(h0))" in text


def test_generated_sources_leave_linecache_with_their_rules() -> None:
    rs = rules_from_yaml(TINY["curl_to_paste_site"])
    (fn,) = rs._routes["gateway"]
    filename = fn.__code__.co_filename
    assert linecache.getline(filename, 1).startswith("def _match_group0(E, hits):")
    del rs, fn
    gc.collect()
    assert filename not in linecache.cache


def test_rules_check_shows_the_code_of_one_rule_or_all(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "curl.yml").write_text(TINY["curl_to_paste_site"])
    (rules / "ports.yml").write_text(TINY["admin_ports_from_core"])
    runner = CliRunner()
    one = runner.invoke(
        cli,
        [
            "rules",
            "check",
            "--no-validate",
            str(rules),
            "--show-code=9d000000-0000-4000-8000-000000000002",
        ],
    )
    assert one.exit_code == 0, one.output
    assert f"# rule 9d000000-0000-4000-8000-000000000002 at {rules / 'ports.yml'}:1" in one.stdout
    assert "Curl to paste site" not in one.stdout
    assert "2 detection rule(s)" in one.stderr
    compile(one.stdout, "shown", "exec")  # what is shown is Python
    every = runner.invoke(cli, ["rules", "check", "--no-validate", "--show-code", str(rules)])
    assert every.exit_code == 0, every.output
    assert "# Curl to paste site" in every.stdout and "# Admin ports opened" in every.stdout
    unknown = runner.invoke(cli, ["rules", "check", str(rules), "--show-code=nope"])
    assert unknown.exit_code == 2
    assert "no detection rule with id or name 'nope'" in unknown.stderr


BROKEN = """\
title: Fine
id: 9d000000-0000-4000-8000-000000000011
logsource: {category: proxy}
detection: {sel: {cs-host: a.example}, condition: sel}
---
title: Regex RE2 cannot run, second in a list
id: 9d000000-0000-4000-8000-000000000012
logsource:
    category: proxy
detection:
    selection:
        cs-host: x.example
        c-uri|re:
            - '^/ok$'
            - '(?<=admin)/x'
    condition: selection
---
title: Placeholder without values
id: 9d000000-0000-4000-8000-000000000013
logsource: {product: zonewatch, service: vdi}
detection:
    selection:
        user.name|expand: '%admins%'
        event.action: vdi-login
    condition: selection
"""


def test_compile_errors_point_at_the_yaml_line_of_the_value() -> None:
    rs = rules_from_yaml(BROKEN, pipeline="none", path="broken.yml")
    assert [(e.path, e.line) for e in rs.errors] == [("broken.yml", 15), ("broken.yml", 23)]
    assert "(?<=admin)/x" in str(rs.errors[0])
    assert "placeholder %admins% has no values" in str(rs.errors[1])
    assert [r.title for r in rs.detections] == ["Fine"]
