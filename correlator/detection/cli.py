"""``zonewatch match`` (offline detection over NDJSON) and ``zonewatch rules check|test``."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from zonewatch.errors import ParseError, RuleError, ZonewatchError
from zonewatch.sources import SOURCES

if TYPE_CHECKING:
    from zonewatch.config import Settings

# Skipped input lines reported one by one; beyond that, only counted.
_SHOWN_BAD_LINES = 5


class InputDataError(ZonewatchError):
    """Some input lines were not JSON objects (they were skipped and reported)."""

    exit_code = 65


def _pipeline(settings: Settings | None, pipeline: str | None, placeholders: str | None) -> Any:
    """The rules' pipeline: the options, else the settings (as every command)."""
    from correlator.detection.pipelines import configured_pipeline
    from zonewatch.config import CorrelatorSettings

    cfg = settings.correlator if settings is not None else CorrelatorSettings()
    return configured_pipeline(cfg, pipeline, placeholders)


def _report_errors(errors: Iterable[RuleError]) -> int:
    count = 0
    for err in errors:
        click.echo(f"zonewatch: rule error: {err}", err=True)
        count += 1
    return count


_RULES_OPTION = click.option(
    "--rules",
    "rule_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="Sigma rule file or directory (repeatable).",
)
_PIPELINE_OPTION = click.option(
    "--pipeline",
    default=None,
    help="'ecs' maps SigmaHQ proxy/firewall taxonomy onto our ECS fields; 'none' uses rule "
    "fields verbatim; or a pySigma pipeline YAML file. Default: settings (ecs).",
)
_PLACEHOLDER_OPTION = click.option(
    "--placeholders",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML mapping placeholder name -> values, for rules using |expand. "
    "Default: settings (correlator.placeholders_file).",
)


@click.command()
@_RULES_OPTION
@click.option(
    "--source",
    type=click.Choice(SOURCES),
    help="Source of every input event; otherwise event.dataset decides, and rules "
    "of any logsource apply when it names none of ours.",
)
@_PIPELINE_OPTION
@_PLACEHOLDER_OPTION
@click.option(
    "--flatten",
    type=click.Choice(["evtx"]),
    help="Read evtx-converter JSON (SigmaHQ regression data) as flat Sigma fields.",
)
@click.argument("events", type=click.File("rb"), default="-")
@click.pass_obj
def match(
    settings: Settings | None,
    rule_paths: tuple[str, ...],
    source: str | None,
    pipeline: str | None,
    placeholders: str | None,
    flatten: str | None,
    events: BinaryIO,
) -> None:
    """Match NDJSON EVENTS (a file or - for stdin) against Sigma rules, offline.

    Prints one JSON object per alert on stdout: rule_id, rule_title, level,
    type, evidence (with each event's 1-based input line), and for
    correlations group and window. Rule errors are reported on stderr and the
    other rules still run. Exit 65 when input lines were not JSON objects.
    """
    from correlator.detection.alerts import alert_json
    from correlator.detection.loader import load_rules
    from correlator.detection.offline import read_ndjson, run_offline

    ruleset = load_rules(list(rule_paths), pipeline=_pipeline(settings, pipeline, placeholders))
    _report_errors(ruleset.errors)
    bad_lines = 0
    good_lines = 0

    def on_error(err: ParseError) -> None:
        nonlocal bad_lines
        bad_lines += 1
        if bad_lines <= _SHOWN_BAD_LINES:
            click.echo(f"zonewatch: skipped {err}", err=True)

    def counted(
        lines: Iterable[tuple[int, dict[str, Any]]],
    ) -> Iterable[tuple[int, dict[str, Any]]]:
        nonlocal good_lines
        for item in lines:
            good_lines += 1
            yield item

    from correlator.correlation.offline import offline_hooks
    from correlator.detection.offline import evidence_time
    from correlator.detection.throttle import throttle_from_settings

    hooks = offline_hooks(ruleset, evidence_time)
    on_hit, on_end = (hooks[0], hooks[1]) if hooks else (None, None)
    throttle = throttle_from_settings(settings.correlator if settings is not None else None)
    out = sys.stdout.buffer
    for alert in run_offline(
        counted(read_ndjson(events, flatten, on_error)),
        ruleset,
        source=source,
        on_hit=on_hit,
        on_end=on_end,
        throttle=throttle,
    ):
        out.write(alert_json(alert) + b"\n")
    out.flush()
    if throttle.suppressed:
        titles = {rule.id: rule.title for rule in ruleset.detections}
        click.echo(
            f"zonewatch: {sum(throttle.suppressed.values())} alert(s) suppressed (suppress:): "
            + ", ".join(f"{titles.get(r, r)}: {n}" for r, n in sorted(throttle.suppressed.items())),
            err=True,
        )
    if bad_lines > _SHOWN_BAD_LINES:
        click.echo(f"zonewatch: ... and {bad_lines - _SHOWN_BAD_LINES} more", err=True)
    if bad_lines and not good_lines:
        name = getattr(events, "name", "-")
        shown = name if isinstance(name, str) and not name.startswith("<") else "-"
        raise InputDataError(
            f"no line of {shown} is a JSON event: match reads normalized events (NDJSON), "
            f"not vendor logs. Normalize them first: zonewatch parse --source SOURCE {shown} "
            "| zonewatch match --rules RULES -"
        )
    if bad_lines:
        raise InputDataError(f"{bad_lines} input line(s) were not JSON objects and were skipped")


@click.group()
def rules() -> None:
    """Check and test Sigma rules."""


_ALL_RULES = "\0all"


@rules.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@_PIPELINE_OPTION
@_PLACEHOLDER_OPTION
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="Run sigma-cli's validators (issues are reported; only errors fail).",
)
@click.option(
    "--show-code",
    "show_code",
    is_flag=False,
    flag_value=_ALL_RULES,
    default=None,
    metavar="[RULE_ID]",
    help="Print the Python the detection rules compile to, as it runs (a comment names "
    "each rule: title, id, file:line), on stdout; with RULE_ID (an id or name), only "
    "the functions that test that rule.",
)
@click.pass_obj
def check(
    settings: Settings | None,
    paths: tuple[str, ...],
    pipeline: str | None,
    placeholders: str | None,
    validate: bool,
    show_code: str | None,
) -> None:
    """Parse, validate and compile rules; exit 65 with located messages on errors.

    PATHS are rule files or folders. ``--show-code`` prints the generated
    Python (``rules check rules/ --show-code``, or ``--show-code=RULE_ID``).
    """
    from correlator.detection.checks import validation_issues
    from correlator.detection.loader import load_rules

    if not paths and show_code not in (None, _ALL_RULES) and Path(show_code).exists():
        # "--show-code rules/": the option took the folder as its value.
        paths, show_code = (show_code,), _ALL_RULES
    if not paths:
        raise click.UsageError("give at least one rule file or folder")
    ruleset = load_rules(
        list(paths), pipeline=_pipeline(settings, pipeline, placeholders), eager=True
    )
    failures = _report_errors(ruleset.errors)
    if validate:
        for issue in validation_issues(ruleset):
            click.echo(f"zonewatch: rule warning: {issue}", err=True)
    if show_code is not None:
        rule_id = None
        if show_code != _ALL_RULES:
            rule = ruleset.rule(show_code)
            if rule is None:
                raise click.BadParameter(
                    f"no detection rule with id or name {show_code!r} in {', '.join(paths)}",
                    param_hint="--show-code",
                )
            rule_id = rule.id
        click.echo(ruleset.source_code(rule_id))
    click.echo(
        f"{len(ruleset.detections)} detection rule(s), {len(ruleset.correlations)} "
        f"correlation rule(s) compiled; {failures} error(s)",
        err=show_code is not None,  # stdout holds the code then
    )
    if failures:
        raise RuleError(f"{failures} rule error(s); see messages above")


@rules.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@_PIPELINE_OPTION
@_PLACEHOLDER_OPTION
@click.pass_obj
def test_rules(
    settings: Settings | None,
    paths: tuple[str, ...],
    pipeline: str | None,
    placeholders: str | None,
) -> None:
    """Run each rule's own tests (see correlator/detection/README.md).

    Detection rules: the ``match`` / ``nomatch`` events of their ``tests``
    key or of ``<rule>.tests.yml``. Correlation rules: the ``timelines`` of
    ``<rule>.tests.yml``, each replayed through detection and correlation.
    Exit 65 when an expectation fails or a rule does not load.
    """
    from correlator.detection.loader import load_rules
    from correlator.detection.ruletests import run_rule_tests

    ruleset = load_rules(list(paths), pipeline=_pipeline(settings, pipeline, placeholders))
    errors = _report_errors(ruleset.errors)
    report = run_rule_tests(ruleset)
    for failure in report.failures:
        click.echo(f"FAIL {failure}", err=True)
    click.echo(
        f"{report.passed} passed, {len(report.failures)} failed, "
        f"{report.untested} rule(s) without tests "
        f"({report.timelines} correlation timeline(s))"
    )
    if report.failures or errors:
        raise RuleTestFailure(
            f"{len(report.failures)} rule test(s) failed, {errors} rule error(s); "
            "see the FAIL lines above"
        )


class RuleTestFailure(RuleError):
    """A rule's own tests did not behave as declared (a bad rule: exit 65)."""


from correlator.policy.cli import generate  # noqa: E402  (the zone policy as rules)

rules.add_command(generate)
