"""Hostile rule files, zone policies and settings (issue 20, point 7): alias
bombs, deep nesting, huge files, bad regexes, binary garbage. Each is
refused with a located message, quickly and in little memory; the good rules
beside them still load.

The commands run as child processes under a memory limit, so a regression
fails here instead of taking the test session down with it."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from zonewatch import bounded_yaml
from zonewatch.bounded_yaml import YamlBoundsError, YamlLimits

MEMORY_LIMIT = 1 << 30  # the alias bomb of the issue took 1.8 GB


def regex_rule(pattern: str) -> str:
    return rule(f"  sel:\n    url.original|re: '{pattern}'\n  condition: sel\n")


def rule(detection: str, head: str = "") -> str:
    return (
        f"title: Hostile\nid: {uuid.uuid4()}\nstatus: test\n{head}"
        "logsource:\n  product: zonewatch\n  service: firewall\nlevel: low\n"
        f"detection:\n{detection}"
    )


def nine_times(name: str, of: str) -> str:
    return f"x-{name}: &{name} [{', '.join([f'*{of}'] * 9)}]\n"


# 464 bytes: six levels of nine aliases, 531,441 keywords once expanded
# (38 s and 1.8 GB in `rules check` before the bound; one level more: OOM).
KEYWORD_BOMB = rule(
    "  selection: *f\n  condition: selection\n",
    head='x-a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    + "".join(nine_times(n, o) for n, o in zip("bcdef", "abcde", strict=True)),
)
MAPPING_BOMB = rule(
    "  selection: *e\n  condition: selection\n",
    head="x-a: &a {source.ip: 10.0.0.1, destination.port: 445, event.action: allow}\n"
    + "".join(nine_times(n, o) for n, o in zip("bcde", "abcd", strict=True)),
)
HOSTILE_RULES = {
    "keyword_bomb.yml": (KEYWORD_BOMB, "alias bomb"),
    "mapping_bomb.yml": (MAPPING_BOMB, "alias bomb"),
    "many_aliases.yml": (
        rule("  sel:\n    x: &v a\n" + "".join(f"    y{i}: *v\n" for i in range(1500))),
        "more than 1000 aliases",
    ),
    "deep_flow.yml": (rule("  sel: " + "[" * 5000 + "]" * 5000 + "\n"), "nesting"),
    "deep_block.yml": (
        rule("".join("  " * (i + 1) + "k:\n" for i in range(200))),
        "nesting deeper than 64",
    ),
    "huge.yml": (
        rule("  sel:\n    source.ip:\n" + "      - 10.1.2.3\n" * 150_000 + "  condition: sel\n"),
        "more than the 1,048,576 bytes",
    ),
    "re_lookbehind.yml": (regex_rule("(?<=admin)\\.php"), "not supported by RE2"),
    "re_backref.yml": (regex_rule("(a)\\1"), "not supported by RE2"),
    "re_invalid.yml": (regex_rule("(["), "invalid"),
    "re_huge.yml": (regex_rule("((a{1000}){1000}){1000}"), "not supported by RE2"),
    "python_tag.yml": ("title: !!python/object/apply:os.system ['echo pwned']\n",
                       "could not determine a constructor"),
    "not_a_mapping.yml": ("- just\n- a list\n", "must be a YAML mapping"),
}  # fmt: skip
GOOD = regex_rule("^(a+)+$")


def run(*args: str, timeout_s: float = 120) -> tuple[subprocess.CompletedProcess[bytes], float]:
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "zonewatch", *args],
        capture_output=True,
        timeout=timeout_s,
        cwd=ROOT,
        preexec_fn=limit_memory,
    )
    return done, time.monotonic() - started


def test_hostile_rule_files_are_refused_and_good_ones_load(tmp_path: Path) -> None:
    for name, (text, _) in HOSTILE_RULES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "binary.yml").write_bytes(b"\xff\xfe\x00garbage\x00\x01")
    (tmp_path / "good_backtracking_regex.yml").write_text(GOOD)  # RE2 keeps it linear
    done, took = run("rules", "check", str(tmp_path))
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 65, err[-3000:]
    assert "Traceback" not in err
    for name, (_, message) in HOSTILE_RULES.items():
        lines = [line for line in err.splitlines() if f"{name}:" in line and "rule error" in line]
        assert lines and message in lines[0], (name, lines, err[-3000:])
    assert "binary.yml: cannot read rule file" in err
    assert "1 detection rule(s), 0 correlation rule(s) compiled" in done.stdout.decode()
    print(f"rules check of {len(HOSTILE_RULES) + 2} hostile and good files: {took:.1f} s")
    assert took < 60


def test_an_alias_bomb_in_the_zone_policy_or_settings_is_refused(tmp_path: Path) -> None:
    zones = tmp_path / "zones.yaml"
    zones.write_text(
        'x-a: &a ["10.0.0.0/8", "10.0.0.0/8", "10.0.0.0/8", "10.0.0.0/8", "10.0.0.0/8"]\n'
        + "".join(
            f"x-{n}: &{n} [{', '.join([f'*{o}'] * 9)}]\n"
            for n, o in zip("bcdefg", "abcdef", strict=True)
        )
        + "zones:\n  core:\n    cidrs: *g\n"
    )
    done, _ = run("rules", "generate", "--zones", str(zones), "--out", str(tmp_path / "gen"))
    err = done.stderr.decode()
    assert done.returncode == 78 and "alias bomb" in err and "Traceback" not in err
    config = tmp_path / "settings.yaml"
    config.write_text("log_level: info\nx: " + "[" * 100 + "]" * 100 + "\n")
    done, _ = run("--config", str(config), "query", "--list")
    err = done.stderr.decode()
    assert done.returncode == 78 and "nesting deeper than 64" in err, err
    assert "Traceback" not in err


# -- the bound itself ---------------------------------------------------------


def test_the_bound_counts_what_aliases_expand_to() -> None:
    limits = YamlLimits(max_alias_nodes=100)
    bounded_yaml.check("a: &a [1, 2, 3]\nb: [*a, *a]\n", limits)  # 8 nodes through aliases
    with pytest.raises(YamlBoundsError, match="expand to more than 100"):
        bounded_yaml.check(
            "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: [*b, *b]\n",
            limits,
        )


@settings(max_examples=60, deadline=None)
@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=10), children, max_size=5)
        ),
        max_leaves=40,
    )
)
def test_ordinary_yaml_loads_as_pyyaml_loads_it(data: object) -> None:
    text = yaml.safe_dump({"root": data})
    assert bounded_yaml.safe_load(text) == yaml.safe_load(text)
