"""Saved forensic queries: named ``.sql`` files with a comment header.

Header lines (before the SQL) declare the query::

    -- name: user-timeline
    -- description: One user's events across zones and sources
    -- param: user (required) user name as in user.name
    -- param: limit = 10000  most rows to return

Parameters are DuckDB named parameters (``$user``). Every saved query may
use ``$since`` and ``$until`` (set by ``--since/--until``; unbounded by
default). Shipped queries live in this package's ``queries/`` folder; user
queries in ``~/.config/zonewatch/queries``, ``correlator.queries_dir``
(``ZONEWATCH_QUERIES_DIR``) or ``--queries-dir`` override shipped ones of the
same name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from zonewatch.errors import QueryError

PACKAGE_DIR = Path(__file__).with_name("queries")
RANGE_PARAMS = ("since", "until")
_PARAM_LINE = re.compile(
    r"^(?P<name>[A-Za-z_]\w*)\s*(?:(?P<req>\(required\))|=\s*(?P<default>\S+))?\s*(?P<doc>.*)$"
)
_NAMED = re.compile(r"\$([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Param:
    name: str
    required: bool = False
    default: str | None = None
    doc: str = ""


@dataclass(frozen=True)
class SavedQuery:
    name: str
    sql: str
    path: Path
    description: str = ""
    params: tuple[Param, ...] = field(default_factory=tuple)

    def bind(self, given: Mapping[str, str]) -> dict[str, str]:
        """Parameter values for this query; QueryError names what is missing."""
        known = {p.name for p in self.params} | set(RANGE_PARAMS)
        unknown = sorted(set(given) - known)
        if unknown:
            raise QueryError(
                f"saved query {self.name!r} has no parameter {', '.join(unknown)}; "
                f"it takes: {', '.join(sorted(known))}"
            )
        values: dict[str, str] = {}
        missing = []
        for p in self.params:
            if p.name in given:
                values[p.name] = given[p.name]
            elif p.default is not None:
                values[p.name] = p.default
            else:
                missing.append(p.name)
        if missing:
            usage = " ".join(f"--param {m}=..." for m in missing)
            raise QueryError(f"saved query {self.name!r} needs {usage}")
        used = referenced_params(self.sql)
        return {k: v for k, v in {**values, **given}.items() if k in used}


def referenced_params(sql: str) -> set[str]:
    """Named parameters (``$name``) in ``sql``, ignoring string literals and comments."""
    stripped = re.sub(r"'(?:[^']|'')*'|--[^\n]*", " ", sql)
    return set(_NAMED.findall(stripped))


def parse_saved_query(path: Path) -> SavedQuery:
    text = path.read_text(encoding="utf-8")
    name = path.stem
    description = ""
    params: list[Param] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        key, _, value = stripped[2:].strip().partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "name" and value:
            name = value
        elif key == "description":
            description = value
        elif key == "param":
            m = _PARAM_LINE.match(value)
            if not m:
                raise QueryError(f"{path}: bad '-- param:' line {value!r}")
            params.append(Param(m["name"], bool(m["req"]), m["default"], (m["doc"] or "").strip()))
    return SavedQuery(name, text, path, description, tuple(params))


def query_dirs(extra: Iterable[Path] = ()) -> list[Path]:
    """Folders searched for saved queries, later ones overriding earlier ones."""
    dirs = [PACKAGE_DIR, Path.home() / ".config" / "zonewatch" / "queries"]
    dirs.extend(extra)
    return dirs


def saved_queries(extra_dirs: Iterable[Path] = ()) -> dict[str, SavedQuery]:
    found: dict[str, SavedQuery] = {}
    for folder in query_dirs(extra_dirs):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.sql")):
            query = parse_saved_query(path)
            found[query.name] = query
    return found


def looks_like_name(text: str) -> bool:
    return re.fullmatch(r"[a-z][a-z0-9_-]*", text.strip()) is not None
