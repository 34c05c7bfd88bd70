"""sigma-cli's validators over loaded rules (``zonewatch rules check``)."""

from __future__ import annotations

from collections.abc import Iterator

from correlator.detection.ruleset import RuleSet


def validation_issues(ruleset: RuleSet) -> Iterator[str]:
    """Issues found by every validator sigma-cli ships (through pySigma's plugin registry)."""
    from sigma.plugins import InstalledSigmaPlugins
    from sigma.validation import SigmaValidator

    validators = InstalledSigmaPlugins.autodiscover().validators
    validator = SigmaValidator(validators.values())
    rules = [d.sigma for d in ruleset.detections]
    for issue in validator.validate_rules(iter(rules)):
        where = ", ".join(
            f"{r.source.path}" if getattr(r, "source", None) else str(r.id) for r in issue.rules
        )
        yield f"{where}: [{issue.severity.name.lower()}] {issue.description}"
