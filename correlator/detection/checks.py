"""sigma-cli's validators over loaded rules (``zonewatch rules check``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from correlator.detection.ruleset import RuleSet


def validation_issues(ruleset: RuleSet) -> Iterator[str]:
    """Issues found by every validator sigma-cli ships (through pySigma's plugin registry).

    Each validator runs on its own: one that needs data it cannot fetch (the
    ATT&CK tag validators download MITRE data) is reported as skipped instead
    of stopping the check on an offline host.
    """
    from sigma.plugins import InstalledSigmaPlugins
    from sigma.validation import SigmaValidator

    rules = [d.sigma for d in ruleset.detections]
    for name, validator_class in sorted(InstalledSigmaPlugins.autodiscover().validators.items()):
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
