"""The package's import graph: no module imports a higher layer, and no two modules import each other in a circle.

Every ``import`` in ``toolrm_rl/`` counts, also those inside functions (an optional dependency imported on
use still ties the layers together). The layer order is written here and in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "toolrm_rl"

# Lowest first. A module may import its own layer's modules and any lower layer; the packages of one layer
# (eval, verl, serve) do not import each other. config.py and the package root sit below everything.
LAYERS: list[tuple[str, ...]] = [
    ("toolrm_rl", "toolrm_rl.config"),
    ("toolrm_rl.core",),
    ("toolrm_rl.data",),
    ("toolrm_rl.model",),
    ("toolrm_rl.scoring",),
    ("toolrm_rl.eval", "toolrm_rl.verl", "toolrm_rl.serve"),
    ("toolrm_rl.quickstart",),
    ("toolrm_rl.cli",),
]


def module_name(path: Path) -> str:
    """``toolrm_rl/core/calls.py`` -> ``toolrm_rl.core.calls``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: the longest entry of :data:`LAYERS` that is the module or its package."""
    units = [u for layer in LAYERS for u in layer if module == u or module.startswith(u + ".")]
    units = [u for u in units if u != "toolrm_rl" or module == "toolrm_rl"]  # the root covers only itself
    assert units, f"{module}: in no layer; add it to LAYERS here and in docs/architecture.md"
    return max(units, key=len)


def layer_of(module: str) -> int:
    unit = unit_of(module)
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def resolve(name: str) -> str | None:
    """The package module an imported name lives in (``toolrm_rl.core.calls.ToolCall`` -> ``toolrm_rl.core.calls``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """The package modules ``module`` imports anywhere in its file (top level, functions, classes)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            target = resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        unit_of(module)


def test_no_upward_or_sideways_import():
    bad = []
    for importer, targets in GRAPH.items():
        for imported in sorted(targets):
            if layer_of(imported) > layer_of(importer):
                bad.append(f"{importer} -> {imported} (layer {layer_of(importer)} imports layer {layer_of(imported)})")
            elif layer_of(imported) == layer_of(importer) and unit_of(imported) != unit_of(importer) \
                    and layer_of(importer) > 0:
                bad.append(f"{importer} -> {imported} (sibling packages {unit_of(importer)} and {unit_of(imported)})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_look_for():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("toolrm_rl.core.calls") < layer_of("toolrm_rl.scoring") < layer_of("toolrm_rl.cli")
    assert unit_of("toolrm_rl.config") == "toolrm_rl.config" and layer_of("toolrm_rl") == 0
    assert "toolrm_rl.core.render" in GRAPH["toolrm_rl.model.toolrm"]  # imports are found at all
    assert "toolrm_rl.data.generate" in GRAPH["toolrm_rl.eval.best_of_n"]  # including those inside functions
