"""The import-linter layers contract (pyproject ``[tool.importlinter]``,
run by ``make lint``) covers every module: a module no layer names would
escape it silently."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _contract(contract_id: str) -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["id"] == contract_id)


def _modules(package: str) -> set[str]:
    out = set()
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_every_module_sits_in_a_layer() -> None:
    layers = _contract("layers")["layers"]
    assert isinstance(layers, list)
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    roots = {"zonewatch", "connectors", "correlator", "console"}
    unplaced = sorted(
        module
        for root in roots
        for module in _modules(root)
        if module not in roots  # a package's __init__ belongs to no layer
        and not any(module == n or module.startswith(n + ".") for n in named)
    )
    assert unplaced == [], f"name these modules in a layer of pyproject.toml: {unplaced}"
