"""The package's layering, checked by walking every import in src/headsieve (module-level and inside functions).

Packages sit in layers (:data:`LAYERS`, lowest first); a module may import from its own layer's packages or
lower ones, never higher; packages import each other without cycles; and no private name (``_x``) is imported
from another package (a name one package needs from another is part of that package's public face).
"""

from __future__ import annotations

import ast
from pathlib import Path
from support.paths import REPO

SRC = REPO / "src" / "headsieve"

#: packages (subpackages or top-level modules of headsieve) by layer, lowest first
LAYERS = (
    ("errors", "progress", "batching", "io"),
    ("models",),
    ("tokens", "attention"),
    ("tasks", "roles"),
    ("pruning",),
    ("translation", "multilingual"),
    ("plots",),
    ("config", "summary"),
    ("steps",),
    ("cli", "__main__", "__init__"),
)
LAYER = {package: depth for depth, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """``headsieve.roles.sieve`` -> ``roles``; ``headsieve.batching`` -> ``batching``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def imports(path: Path):
    """(imported module, imported names) of every headsieve import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("headsieve"):
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("headsieve"):
                names = [a.name for a in node.names]
                if target == "headsieve":  # from headsieve import batching
                    for name in names:
                        yield f"headsieve.{name}", []
                else:
                    yield target, names


def edges():
    for path in sorted(SRC.rglob("*.py")):
        source = package_of(module_name(path))
        for target, names in imports(path):
            yield path.relative_to(SRC), source, package_of(target), target, names


def test_every_package_has_a_layer():
    packages = {package_of(module_name(p)) for p in SRC.rglob("*.py")}
    assert not packages - set(LAYER), f"packages without a layer in LAYERS: {sorted(packages - set(LAYER))}"


def test_no_import_from_a_higher_layer():
    upward = [
        f"{path}: {source} (layer {LAYER[source]}) imports {target} (layer {LAYER[package]})"
        for path, source, package, target, _ in edges()
        if package != source and LAYER.get(package, 0) > LAYER.get(source, 0)
    ]
    assert not upward, "\n".join(upward)


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for _, source, package, _, _ in edges():
        if package != source:
            graph.setdefault(source, set()).add(package)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, trail + [node]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if state.get(node) is None and visit(node, []):
            break
    assert not cycle, f"import cycle between packages: {' -> '.join(cycle)}"


def test_no_private_name_imported_from_another_package():
    private = [
        f"{path}: from {target} import {name}"
        for path, source, package, target, names in edges()
        for name in names
        if package != source and name.startswith("_")
    ]
    assert not private, "\n".join(private)


def test_the_walk_sees_imports():
    """The checks above would pass on a walker that finds nothing: it must find the known imports."""
    found = {(source, package) for _, source, package, _, _ in edges()}
    assert ("roles", "io") in found and ("pruning", "models") in found and ("attention", "batching") in found
