"""The line in its YAML where a part of a parsed rule was written.

pySigma's rule objects do not remember lines. When the compiler refuses a
part of a rule (``CompileError.node``: the condition-tree leaf it failed on),
the document is composed again into YAML nodes, whose marks hold lines, and
walked alongside the rule's detections: each detection item meets the key
(or list element) it was built from, each value the scalar it was read from.
The leaf's value (or, when the pipeline copied it, the first item on the
leaf's field) gives the line. Done only for a rule that failed, so loading
pays nothing.
"""

from __future__ import annotations

from typing import Any

import yaml
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def rule_line(text: str, first_line: int, rule: SigmaRule, node: Any) -> int:
    """Line of ``node`` (a condition-tree element of ``rule``, or None) in the
    document ``text`` starting at ``first_line``; the ``detection:`` or
    ``condition:`` key when the part is not found, else ``first_line``."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return first_line
    if not isinstance(root, yaml.MappingNode):
        return first_line
    section = _value(root, "detection")
    if not isinstance(section, yaml.MappingNode):
        return first_line
    key = _key(root, "detection")
    fallback = key.start_mark.line if key is not None else 0
    if node is None:
        condition = _key(section, "condition")
        return first_line + (condition.start_mark.line if condition is not None else fallback)
    lines = _Lines()
    detections = getattr(getattr(rule, "detection", None), "detections", None) or {}
    for name, detection in detections.items():
        value = _value(section, name)
        if value is not None:
            lines.walk(detection, value)
    found = lines.of(node)
    return first_line + (found if found is not None else fallback)


def _key(mapping: yaml.MappingNode, name: str) -> yaml.Node | None:
    for k, _ in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == name:
            return k
    return None


def _value(mapping: yaml.MappingNode, name: str) -> yaml.Node | None:
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == name:
            return v
    return None


class _Lines:
    """Lines (0-based, in the document) of rule parts, by identity, and of the
    first detection item of each field name."""

    def __init__(self) -> None:
        self.by_id: dict[int, int] = {}
        self.by_field: dict[str, int] = {}

    def of(self, node: Any) -> int | None:
        """The line of a condition-tree leaf: its value's, else its detection
        item's, else that of the first item on its field (pySigma's leaves do
        not link back to their items; a pipeline may have copied the value)."""
        for part in (getattr(node, "value", None), node, getattr(node, "parent", None)):
            if part is not None and id(part) in self.by_id:
                return self.by_id[id(part)]
        field = getattr(node, "field", None)
        return self.by_field.get(field) if isinstance(field, str) else None

    def walk(self, obj: Any, node: yaml.Node) -> None:
        """Record ``obj`` (a SigmaDetection or item, built from ``node`` as
        ``SigmaDetection.from_definition`` builds them) and its parts."""
        self.by_id.setdefault(id(obj), node.start_mark.line)
        if not isinstance(obj, SigmaDetection):
            self.values(obj, node, node)
            return
        items = obj.detection_items
        if isinstance(node, yaml.MappingNode):
            for item, (key, value) in zip(items, node.value, strict=False):
                self.item(item, key, value)
        elif isinstance(node, yaml.SequenceNode):
            if len(items) == 1 and isinstance(items[0], SigmaDetectionItem):
                self.walk(items[0], node)  # a list of plain values: one item
            else:
                for item, element in zip(items, node.value, strict=False):
                    self.walk(item, element)
        elif items:
            self.walk(items[0], node)

    def item(self, item: Any, key: yaml.Node, value: yaml.Node) -> None:
        """``field|modifiers: values``, or what the pipeline replaced it with (a
        detection of one item per mapped field, each with the same values)."""
        self.by_id.setdefault(id(item), key.start_mark.line)
        if isinstance(item, SigmaDetection):
            for sub in item.detection_items:
                self.item(sub, key, value)
        else:
            self.values(item, key, value)

    def values(self, item: Any, key: yaml.Node, node: yaml.Node) -> None:
        values = getattr(item, "value", None) or []
        elements = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if len(values) == len(elements):
            for value, element in zip(values, elements, strict=True):
                self.by_id.setdefault(id(value), element.start_mark.line)
        field = getattr(item, "field", None)
        if isinstance(field, str):
            self.by_field.setdefault(field, key.start_mark.line)
