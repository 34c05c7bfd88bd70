"""YAML with bounds on size, nesting and aliases, for every file zonewatch
reads: rules, ``zones.yaml``, settings, routing, secrets, pipelines.

PyYAML builds an alias as a shared reference, so loading an "alias bomb"
is cheap; whoever walks the result then visits every reference as a copy.
A 464-byte rule whose detection was nine aliases of nine aliases ... took
`rules check` 38 s and 1.8 GB (issue 20), and one level more exhausted
memory. Before anything is built, :func:`check` reads the event stream
(linear in the text) and counts, for each document stream:

- the text's size (``max_bytes``);
- nesting depth (``max_depth``), which also keeps the recursive
  constructors far from Python's stack limit;
- alias uses (``max_aliases``) and the nodes they stand for once expanded
  (``max_alias_nodes``): an alias of an anchored list of 1000 items adds
  1000 nodes, an alias of a list of such aliases their product.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class YamlLimits:
    # 20 times the largest SigmaHQ rule; a 3 MB rule (150k values) took
    # `rules check` 19 s and 400 MB, so larger lists belong in a lookup.
    max_bytes: int = 1 << 20
    max_depth: int = 64
    max_aliases: int = 1000
    max_alias_nodes: int = 10_000


LIMITS = YamlLimits()


class YamlBoundsError(yaml.MarkedYAMLError):
    """A YAML text beyond the bounds; a ``YAMLError``, so callers that report
    syntax errors with their line report this one too."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def check(text: str | bytes, limits: YamlLimits = LIMITS) -> None:
    """Raise :class:`YamlBoundsError` if ``text`` is beyond ``limits``."""
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > limits.max_bytes:
        raise YamlBoundsError(
            f"the file is {size:,} bytes, more than the {limits.max_bytes:,} a YAML file "
            "may have here"
        )
    expanded: dict[str, int] = {}  # anchor -> nodes it stands for
    open_sizes: list[int] = []  # nodes so far in each open mapping/sequence
    open_anchors: list[str | None] = []
    aliases = alias_nodes = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_sizes) >= limits.max_depth:
                raise YamlBoundsError(
                    f"nesting deeper than {limits.max_depth} levels", event.start_mark
                )
            open_sizes.append(1)
            open_anchors.append(event.anchor)
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            nodes = open_sizes.pop()
            anchor = open_anchors.pop()
            if anchor is not None:
                expanded[anchor] = nodes
        elif isinstance(event, yaml.ScalarEvent):
            nodes = 1
            if event.anchor is not None:
                expanded[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            nodes = expanded.get(str(event.anchor), 1)
            alias_nodes += nodes
            if aliases > limits.max_aliases:
                raise YamlBoundsError(
                    f"more than {limits.max_aliases} aliases (*name)", event.start_mark
                )
            if alias_nodes > limits.max_alias_nodes:
                raise YamlBoundsError(
                    f"aliases (*name) that expand to more than {limits.max_alias_nodes:,} "
                    "values: an alias bomb, or a list to write out",
                    event.start_mark,
                )
        else:
            continue
        if open_sizes:
            open_sizes[-1] += nodes


def safe_load(text: str | bytes, limits: YamlLimits = LIMITS) -> Any:
    """``yaml.safe_load`` after :func:`check`."""
    check(text, limits)
    return yaml.load(text, Loader=_Loader)


def safe_load_all(text: str | bytes, limits: YamlLimits = LIMITS) -> list[Any]:
    """``yaml.safe_load_all`` after :func:`check`, as a list."""
    check(text, limits)
    return list(yaml.load_all(text, Loader=_Loader))


def read_text(path: str | os.PathLike[str], limits: YamlLimits = LIMITS) -> str:
    """A YAML file's text, refused (:class:`YamlBoundsError`) above
    ``max_bytes`` without reading more than that."""
    with open(path, "rb") as fh:
        data = fh.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise YamlBoundsError(
            f"the file is more than the {limits.max_bytes:,} bytes a YAML file may have here"
        )
    return data.decode("utf-8")
