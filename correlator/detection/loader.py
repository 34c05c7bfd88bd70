"""Rule files -> a RuleSet: parse with pySigma, apply filters and the pipeline, compile.

A rule that fails at any step becomes a located ``RuleError``; the others
keep loading (``collect_errors=True``).
"""

from __future__ import annotations

import copy
import gc
import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule

from correlator.detection import compiler, locations
from correlator.detection.pipelines import build_pipeline, route
from correlator.detection.ruleset import DetectionRule, RuleSet, build_routes, index_refs
from correlator.detection.throttle import SUPPRESS_ATTRIBUTE, Suppression
from correlator.policy import GENERATOR_AUTHOR
from zonewatch import bounded_yaml
from zonewatch.errors import RuleError
from zonewatch.logs import get_logger

log = get_logger(__name__)

_DOC_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class RuleDoc:
    """One YAML document of a rule file, with where it starts."""

    path: str
    line: int
    text: str
    data: dict[str, Any]


# Files a rules folder holds that are not Sigma rules: the zone policy and
# rule test sidecars. Named explicitly on the command line, they still load.
NOT_RULES = ("zones.yaml", "zones.yml")
TEST_SIDECAR_SUFFIX = ".tests.yml"


def _is_rule_file(path: Path) -> bool:
    return (
        path.suffix in (".yml", ".yaml")
        and path.is_file()
        and path.name not in NOT_RULES
        and not path.name.endswith(TEST_SIDECAR_SUFFIX)
    )


def rule_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[RuleError]]:
    files: list[Path] = []
    errors: list[RuleError] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if _is_rule_file(p)))
        elif path.is_file():
            files.append(path)
        else:
            errors.append(RuleError("no such rule file or directory", str(path)))
    return files, errors


def split_documents(path: str, text: str) -> tuple[list[RuleDoc], list[RuleError]]:
    """YAML documents of a file with their first line, so errors can point at them."""
    docs: list[RuleDoc] = []
    errors: list[RuleError] = []
    starts = [0] + [m.end() + 1 for m in _DOC_SEPARATOR.finditer(text)]
    ends = [m.start() for m in _DOC_SEPARATOR.finditer(text)] + [len(text)]
    for start, end in zip(starts, ends, strict=True):
        chunk = text[start:end]
        line = text.count("\n", 0, start) + 1
        if not chunk.strip() or all(
            not ln.strip() or ln.lstrip().startswith("#") for ln in chunk.splitlines()
        ):
            continue
        try:
            data = bounded_yaml.safe_load(chunk)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = line + mark.line if mark is not None else line
            reason = getattr(exc, "problem", None) or str(exc)
            errors.append(RuleError(f"invalid YAML: {reason}", path, where))
            continue
        if not isinstance(data, dict):
            errors.append(RuleError("a rule document must be a YAML mapping", path, line))
            continue
        docs.append(RuleDoc(path, line, chunk, data))
    return docs, errors


def locate(doc: RuleDoc, needle: str | None) -> int:
    """Line of the first occurrence of ``needle`` in the document (else its first line)."""
    if needle:
        # Values live under detection:, titles and descriptions often repeat them.
        section = doc.text.find("\ndetection:")
        for probe in (needle, needle.split("|")[0]):
            for start in (max(section, 0), 0):
                idx = doc.text.find(probe, start)
                if idx >= 0:
                    return doc.line + doc.text.count("\n", 0, idx)
    return doc.line


def _sigma_error(exc: SigmaError | Exception, doc: RuleDoc) -> RuleError:
    message = str(exc.args[0] if exc.args else exc)
    needle = _needle_of(message)
    if message.startswith("Placeholder replacement variable") and needle:
        # pySigma: "Placeholder replacement variable 'x' doesn't exists."
        message = compiler.placeholder_missing(needle.strip("%"))
    return RuleError(message, doc.path, locate(doc, needle))


def _needle_of(message: str) -> str | None:
    quoted = re.search(r"'([^']+)'", message)
    if quoted is None:
        return None
    if message.startswith("Placeholder"):
        return f"%{quoted.group(1)}%"
    return quoted.group(1)


# Top-level rule fields pySigma takes as text only.
_TEXT_FIELDS = ("id", "name", "title")


def _parse_doc(doc: RuleDoc) -> tuple[Any, list[RuleError]]:
    loc = SigmaRuleLocation(Path(doc.path))
    data = doc.data
    for key in _TEXT_FIELDS:
        value = data.get(key) if isinstance(data, dict) else None
        if value is not None and not isinstance(value, str):
            # YAML reads `id: 1` as a number; pySigma then fails with an
            # AttributeError that names no field.
            kind = type(value).__name__
            return None, [
                RuleError(
                    f"rule {key} must be text, not {kind} {value!r}: quote it"
                    + (" or use a UUID" if key == "id" else ""),
                    doc.path,
                    locate(doc, f"{key}:"),
                )
            ]
    try:
        obj: Any
        if "correlation" in data:
            # pySigma 1.5 rejects ranges ({gt: 100, lte: 200}) and truncates
            # float thresholds; the correlation engine reads them from here.
            from correlator.correlation import prepare_correlation_dict

            data = prepare_correlation_dict(data)
            obj = SigmaCorrelationRule.from_dict(data, collect_errors=True, source=loc)
        elif "filter" in data:
            obj = SigmaFilter.from_dict(data, collect_errors=True, source=loc)
        else:
            obj = SigmaRule.from_dict(data, collect_errors=True, source=loc)
    except SigmaError as exc:
        return None, [_sigma_error(exc, doc)]
    except Exception as exc:  # malformed structure pySigma does not wrap
        return None, [RuleError(f"rule could not be parsed: {exc}", doc.path, doc.line)]
    errs = [_sigma_error(e, doc) for e in getattr(obj, "errors", [])]
    return (None if errs else obj), errs


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading builds ~700k long-lived objects (pySigma's rule trees); the cyclic
    GC rescans them over and over meanwhile, which measured 30 % of load time.
    Nothing loading creates is garbage, so collection waits until it is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_rules(
    paths: Sequence[str | Path],
    pipeline: str | ProcessingPipeline | None = "ecs",
    collect_errors: bool = True,
    placeholders: dict[str, Any] | None = None,
    eager: bool = False,
) -> RuleSet:
    """Load Sigma detection, correlation and filter rules from files and directories.

    ``pipeline``: "ecs" (SigmaHQ taxonomy -> our ECS fields), "none"/None
    (fields verbatim), a pySigma pipeline file, or a ProcessingPipeline.
    ``placeholders`` fills ``|expand`` values. With ``collect_errors=False``
    the first error is raised instead of collected. ``eager`` compiles every
    rule's code now; otherwise rules the prefilter never wakes stay uncompiled.
    """
    files, errors = rule_files(paths)
    docs: list[RuleDoc] = []
    with _gc_paused():
        for path in files:
            try:
                text = bounded_yaml.read_text(path)
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                errors.append(RuleError(f"cannot read rule file: {exc}", str(path)))
                continue
            file_docs, file_errors = split_documents(str(path), text)
            docs.extend(file_docs)
            errors.extend(file_errors)
        ruleset = load_documents(docs, pipeline, placeholders, errors, eager=eager)
    if not collect_errors and ruleset.errors:
        raise ruleset.errors[0]
    return ruleset


def load_documents(
    docs: list[RuleDoc],
    pipeline: str | ProcessingPipeline | None = "ecs",
    placeholders: dict[str, Any] | None = None,
    errors: list[RuleError] | None = None,
    index: bool = True,
    eager: bool = False,
) -> RuleSet:
    errors = list(errors or [])
    rules: list[tuple[SigmaRule, RuleDoc]] = []
    filters: list[tuple[SigmaFilter, RuleDoc]] = []
    correlations: list[tuple[SigmaCorrelationRule, RuleDoc]] = []
    for doc in docs:
        obj, errs = _parse_doc(doc)
        errors.extend(errs)
        if isinstance(obj, SigmaCorrelationRule):
            correlations.append((obj, doc))
        elif isinstance(obj, SigmaFilter):
            filters.append((obj, doc))
        elif isinstance(obj, SigmaRule):
            rules.append((obj, doc))

    rules = _dedupe(rules, errors)
    for flt, fdoc in filters:
        applied: list[tuple[SigmaRule, RuleDoc]] = []
        for rule, doc in rules:
            try:
                applied.append((flt.apply_on_rule(rule), doc))  # type: ignore[arg-type]
            except SigmaError as exc:
                errors.append(_sigma_error(exc, fdoc))
                applied.append((rule, doc))
        rules = applied

    generate = _correlation_flags(rules, correlations, errors)
    proc = (
        pipeline
        if isinstance(pipeline, ProcessingPipeline)
        else build_pipeline(pipeline, placeholders)
    )
    compiled: list[tuple[DetectionRule, compiler.CompiledRule]] = []
    for n, (rule, doc) in enumerate(rules):
        try:
            proc.apply(rule)
        except SigmaError as exc:
            errors.append(_sigma_error(exc, doc))
            continue
        except Exception as exc:
            errors.append(RuleError(f"pipeline failed on rule: {exc}", doc.path, doc.line))
            continue
        try:
            code = compiler.compile_rule(rule, f"r{n}_")
        except compiler.CompileError as exc:
            line = locations.rule_line(doc.text, doc.line, rule, exc.node)
            errors.append(RuleError(str(exc), doc.path, line))
            continue
        except SigmaError as exc:
            errors.append(_sigma_error(exc, doc))
            continue
        try:
            suppress = _suppression(rule)
        except ValueError as exc:
            errors.append(RuleError(str(exc), doc.path, locate(doc, SUPPRESS_ATTRIBUTE)))
            continue
        ident = _rule_id(rule, doc)
        detection = DetectionRule(
            id=ident,
            name=rule.name,
            title=rule.title or ident,
            level=rule.level.name.lower() if rule.level else "medium",
            tags=[str(t) for t in rule.tags],
            description=rule.description or "",
            path=doc.path,
            sha256=hashlib.sha256(doc.text.encode("utf-8")).hexdigest(),
            text=doc.text,
            logsource=(rule.logsource.product, rule.logsource.category, rule.logsource.service),
            sigma=rule,
            line=doc.line,
            sources=route(rule.logsource),
            generate=generate.get(id(rule), (True, ()))[0],
            correlated_by=generate.get(id(rule), (True, ()))[1],
            suppress=suppress,
            zone_policy=rule.author == GENERATOR_AUTHOR,
        )
        compiled.append((detection, code))
    ruleset = RuleSet(
        detections=[d for d, _ in compiled],
        correlations=[c for c, _ in correlations],
        errors=errors,
    )
    ruleset._routes = build_routes(compiled, ruleset.errors, index, eager, ruleset._sources)
    ruleset._by_ref = index_refs(ruleset.detections)
    # A correlation that cannot be evaluated is reported like any bad rule
    # and left out, instead of stopping every correlation at start-up.
    from correlator.correlation.compiled import usable_correlations

    ruleset.correlations = usable_correlations(ruleset.correlations, ruleset.rule, errors)
    if errors:
        log.warning("rules_with_errors", errors=len(errors), loaded=len(ruleset.detections))
    return ruleset


def _suppression(rule: SigmaRule) -> Suppression | None:
    """The rule's ``suppress`` attribute (``ValueError``: what to fix)."""
    raw = rule.custom_attributes.get(SUPPRESS_ATTRIBUTE)
    return None if raw is None else Suppression.parse(raw)


def _rule_id(rule: SigmaRule, doc: RuleDoc) -> str:
    if rule.id is not None:
        return str(rule.id)
    if rule.name:
        return rule.name
    return f"{Path(doc.path).stem}:{doc.line}"


def _dedupe(
    rules: list[tuple[SigmaRule, RuleDoc]], errors: list[RuleError]
) -> list[tuple[SigmaRule, RuleDoc]]:
    seen: dict[str, RuleDoc] = {}
    out = []
    for rule, doc in rules:
        key = str(rule.id) if rule.id is not None else None
        if key is not None and key in seen:
            first = seen[key]
            errors.append(
                RuleError(
                    f"duplicate rule id {key} (first defined in {first.path}:{first.line}); "
                    "give each rule its own id",
                    doc.path,
                    locate(doc, key),
                )
            )
            continue
        if key is not None:
            seen[key] = doc
        out.append((rule, doc))
    return out


def _correlation_flags(
    rules: list[tuple[SigmaRule, RuleDoc]],
    correlations: list[tuple[SigmaCorrelationRule, RuleDoc]],
    errors: list[RuleError],
) -> dict[int, tuple[bool, tuple[str, ...]]]:
    """Resolve correlation references; rules referenced only by ``generate: false``
    correlations (the Sigma default) do not raise alerts of their own."""
    if not correlations:
        return {}
    members: list[SigmaRule | SigmaCorrelationRule | SigmaFilter] = [r for r, _ in rules]
    members.extend(c for c, _ in correlations)
    collection = SigmaCollection(members, resolve_references=False)
    flags: dict[int, tuple[bool, tuple[str, ...]]] = {}
    kept: list[tuple[SigmaCorrelationRule, RuleDoc]] = []
    for corr, doc in correlations:
        try:
            corr.resolve_rule_references(collection)
        except SigmaError as exc:
            errors.append(_sigma_error(exc, doc))
            continue
        kept.append((corr, doc))
        ref_name = str(corr.id) if corr.id else (corr.name or corr.title)
        for ref in corr.rules or ():
            target = getattr(ref, "rule", None)
            if isinstance(target, SigmaRule):
                gen, names = flags.get(id(target), (False, ()))
                flags[id(target)] = (gen or bool(corr.generate), (*names, ref_name))
    correlations[:] = kept
    return flags


def clone_rule(rule: SigmaRule) -> SigmaRule:
    """A deep copy, for callers that apply another pipeline to an already loaded rule."""
    return copy.deepcopy(rule)


def rules_from_yaml(
    text: str,
    pipeline: str | ProcessingPipeline | None = "ecs",
    placeholders: dict[str, Any] | None = None,
    path: str = "<string>",
    index: bool = True,
    eager: bool = False,
) -> RuleSet:
    """A RuleSet from YAML text (one or more ``---``-separated documents); for tests.

    ``index=False`` skips the literal prefilter (every rule runs on every event).
    """
    with _gc_paused():
        docs, errors = split_documents(path, text)
        return load_documents(docs, pipeline, placeholders, errors, index, eager)
