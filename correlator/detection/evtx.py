"""The JSON shape evtx converters produce -> flat Sigma fields (``--flatten evtx``).

``E = doc["Event"]`` (or the document itself): each ``E.System`` child becomes
a field (a node with ``#text`` gives its text; attributes give ``Name_attr``
fields such as ``Provider_Name``); each ``E.EventData`` child becomes a field
(``Data`` entries with ``#attributes.Name`` become that name, unnamed ones form
a list field ``Data``); ``E.UserData``'s single wrapper element is skipped and
its children hoisted the same way; spaces are removed from field names; event
data wins over System on a name clash.
"""

from __future__ import annotations

from typing import Any


def flatten_evtx(doc: dict[str, Any]) -> dict[str, Any]:
    root = doc.get("Event", doc)
    if not isinstance(root, dict):
        return {}
    out: dict[str, Any] = {}
    system = root.get("System")
    if isinstance(system, dict):
        for name, node in system.items():
            _system_node(name, node, out)
    data: dict[str, Any] = {}
    event_data = root.get("EventData")
    if isinstance(event_data, dict):
        _data_children(event_data, data)
    user_data = root.get("UserData")
    if isinstance(user_data, dict):
        wrappers = [v for k, v in user_data.items() if k != "#attributes"]
        if len(wrappers) == 1 and isinstance(wrappers[0], dict):
            _data_children(wrappers[0], data)
        else:
            _data_children(user_data, data)
    out.update(data)
    return out


def _key(name: str) -> str:
    return name.replace(" ", "")


def _system_node(name: str, node: Any, out: dict[str, Any]) -> None:
    if name == "#attributes":
        return
    if isinstance(node, dict):
        if "#text" in node:
            out[_key(name)] = node["#text"]
        attrs = node.get("#attributes")
        if isinstance(attrs, dict):
            for attr, value in attrs.items():
                out[_key(f"{name}_{attr}")] = value
    else:
        out[_key(name)] = node


def _data_children(node: dict[str, Any], out: dict[str, Any]) -> None:
    unnamed: list[Any] = []
    for name, value in node.items():
        if name == "#attributes":
            continue
        if name == "Data":
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    attrs = item.get("#attributes")
                    if isinstance(attrs, dict) and "Name" in attrs:
                        out[_key(str(attrs["Name"]))] = item.get("#text")
                    elif "#text" in item:
                        unnamed.append(item["#text"])
                else:
                    unnamed.append(item)
            continue
        if isinstance(value, dict) and "#text" in value:
            out[_key(name)] = value["#text"]
        else:
            out[_key(name)] = value
    if unnamed:
        out["Data"] = unnamed
