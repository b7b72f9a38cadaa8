"""The house: no import cycle anywhere, and the stages of service/ never import each other.

The graph is read from the source (every import, deferred ones included), so a cycle hidden
inside a function is a cycle too.
"""

from __future__ import annotations

import ast
import functools
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "consumers", "service", "sandbox")
# The stages of service/: siblings that must not import each other.
STAGES = ("service.dialing", "service.outcomes", "service.bus")
# Who may import what: a module under the key imports nothing under the listed prefixes.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "schemas": ("service", "consumers", "sandbox"),
    "sandbox": ("service", "consumers"),
    "service.ledger": (
        "service.dialing", "service.outcomes", "service.bus", "service.bland",
        "service.commands", "service.composition", "service.app", "service.http", "consumers",
    ),
    "service.bland": (
        "service.ledger", "service.dialing", "service.outcomes", "service.bus",
        "service.commands", "service.composition", "service.app", "consumers",
    ),
    "consumers": ("service.commands", "service.composition", "service.app", "service.http"),
}  # fmt: skip


def module_name(path: Path) -> str:
    """`service/ledger/base.py` -> `service.ledger.base`; a package is its `__init__`."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the project's packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def imported(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """The project modules `path` imports (a `from pkg import mod` names the module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            found = target
            while found and found not in known:
                found = found.rpartition(".")[0]
            if found and found != name:
                yield found


@functools.cache
def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    found = modules()
    known = set(found)
    return {name: set(imported(path, name, known)) for name, path in found.items()}


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle (its modules in order), or [] when the graph has none."""
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def under(name: str, prefix: str) -> bool:
    """True when `name` is `prefix` or inside it."""
    return name == prefix or name.startswith(prefix + ".")


def test_the_reader_sees_the_imports_it_must() -> None:
    edges = graph()
    assert "service.ledger" in edges["service.dialing.dispatcher"]
    assert "service.ledger.base" in edges["service.ledger.claims"] or (
        "service.ledger.intake" in edges["service.ledger.claims"]
    )


def test_no_import_cycle_anywhere() -> None:
    assert cycle(graph()) == []


def test_a_cycle_is_found_when_there_is_one() -> None:
    found = cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert set(found) == {"a", "b", "c"}


@pytest.mark.parametrize("stage", STAGES)
def test_stages_never_import_their_siblings(stage: str) -> None:
    siblings = [s for s in STAGES if s != stage]
    wrong = {
        (name, target)
        for name, targets in graph().items()
        if under(name, stage)
        for target in targets
        if any(under(target, sibling) for sibling in siblings)
    }
    assert wrong == set()


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_never_import_upper_ones(layer: str) -> None:
    wrong = {
        (name, target)
        for name, targets in graph().items()
        if under(name, layer)
        for target in targets
        if any(under(target, banned) for banned in FORBIDDEN[layer])
    }
    assert wrong == set()


def test_only_the_composition_root_reaches_into_consumers() -> None:
    importers = {
        name
        for name, targets in graph().items()
        if under(name, "service") and any(under(t, "consumers") for t in targets)
    }
    assert importers <= {"service.composition"}
