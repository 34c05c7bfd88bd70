"""sigma-cli's validators over loaded rules (``zonewatch rules check``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from correlator.detection.ruleset import RuleSet


def validation_issues(ruleset: RuleSet) -> Iterator[str]:
    """Issues found by every validator sigma-cli ships (through pySigma's plugin registry).

    The ATT&CK and D3FEND tag validators run over the MITRE names zonewatch
    ships (``mitre_tags``): pySigma's own download them at run time. Each
    validator runs on its own: one that fails anyway is reported as skipped
    instead of stopping the check.
    """
    from sigma.plugins import InstalledSigmaPlugins
    from sigma.validation import SigmaValidator

    from correlator.detection.mitre_tags import OFFLINE

    rules = [d.sigma for d in ruleset.detections]
    for name, found in sorted(InstalledSigmaPlugins.autodiscover().validators.items()):
        validator_class = OFFLINE.get(cast(type, found), found)
        try:
            # The registry holds validator classes (its annotation says instances).
            issues = SigmaValidator([cast(Any, validator_class)]).validate_rules(iter(rules))
        except Exception as exc:
            yield f"validator {name} skipped: {exc}"
            continue
        for issue in issues:
            where = ", ".join(
                str(r.source.path) if r.source is not None else str(r.id) for r in issue.rules
            )
            yield f"{where}: [{issue.severity.name.lower()}] {issue.description} ({name})"
