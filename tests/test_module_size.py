"""Small modules named for what they hold: a module over ~600 lines, or a
class over ~400, says why at its top, in a ``# size: <reason>`` comment."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zonewatch", "connectors", "correlator", "console")
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
# Being split on other branches (issue 18): drop each entry when its split lands.
BEING_SPLIT: set[str] = set()  # modules being split by work in flight (none now)
REASON = "# size:"


def _has_reason(lines: list[str], first: int, last: int) -> bool:
    """A ``# size:`` comment among lines ``first`` .. ``last`` (0-based, inclusive)."""
    return any(line.strip().startswith(REASON) for line in lines[max(first, 0) : last + 1])


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _top(tree: ast.Module) -> int:
    """The line (0-based) of the first statement after the docstring and
    ``from __future__``: the module's top ends there."""
    for node in tree.body:
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if not (docstring or future):
            return node.lineno - 1
    return 0


def test_big_modules_and_classes_say_why_at_their_top() -> None:
    unexplained = []
    for path in _modules():
        name = path.relative_to(ROOT).as_posix()
        if name in BEING_SPLIT:
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text)
        module_reason = _has_reason(lines, 0, _top(tree))
        if len(lines) > MAX_MODULE_LINES and not module_reason:
            unexplained.append(f"{name}: {len(lines)} lines")
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or node.end_lineno is None:
                continue
            size = node.end_lineno - node.lineno + 1
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            if (
                size > MAX_CLASS_LINES
                and not module_reason
                and not _has_reason(lines, start - 2, node.body[0].lineno - 1)
            ):
                unexplained.append(f"{name}: class {node.name}, {size} lines")
    assert not unexplained, (
        f"split these, or say why not in a `{REASON} <reason>` line at the top of the module "
        f"(or just above the class): {unexplained}"
    )


def test_the_modules_being_split_still_exist() -> None:
    # A finished split leaves a stale entry behind: remove it from BEING_SPLIT.
    missing = sorted(name for name in BEING_SPLIT if not (ROOT / name).is_file())
    assert not missing, f"remove from BEING_SPLIT, they are split: {missing}"
