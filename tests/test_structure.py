"""The import graph keeps its floors: imports only point down, no cycles, RQ behind one seam."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "models", "trainers", "migrations", "server")

# Bottom to top. A module may import its own floor and the floors below it.
FLOORS = (
    ("core",),
    ("models", "migrations"),
    ("trainers",),
    ("server.queue",),
    ("server.services",),
    ("server.web",),
    ("server.cli", "server"),
)


def floor_of(module: str) -> int:
    best, found = -1, None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), level
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


MODULES = project_modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, module_level_only: bool = False) -> set[str]:
    """Every module `path` imports (lazy imports in functions too, unless `module_level_only`)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not module_level_only:
                    visit(child, False)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                for alias in child.names:  # `from pkg import module` imports pkg.module
                    if f"{child.module}.{alias.name}" in MODULES:
                        found.add(f"{child.module}.{alias.name}")
            visit(child, top)

    visit(tree, True)
    return found


def project_imports(module: str, module_level_only: bool = False) -> set[str]:
    return {name for name in imports_of(MODULES[module], module_level_only)
            if name.split(".")[0] in PACKAGES and name in MODULES}


def test_every_module_has_a_floor():
    assert [m for m in MODULES if floor_of(m) is None] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_point_down(module):
    upward = sorted(name for name in project_imports(module) if floor_of(name) > floor_of(module))
    assert upward == [], f"{module} (floor {floor_of(module)}) imports a higher floor: {upward}"


def test_no_module_level_import_cycle():
    graph = {m: project_imports(m, module_level_only=True) for m in MODULES}
    state: dict[str, int] = {}
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_only_the_queue_package_imports_rq():
    users = sorted(m for m, path in MODULES.items()
                   if any(name == "rq" or name.startswith("rq.") for name in imports_of(path)))
    assert users and all(m.startswith("server.queue") for m in users), users


def test_networks_and_trainers_never_import_the_server():
    for module in MODULES:
        if module.startswith(("models", "trainers", "core")):
            assert not any(name.startswith("server") for name in project_imports(module)), module


@pytest.mark.parametrize("entry, allowed", [
    ("server.web.app", {"server.web.httpd"}),
    ("server.cli.worker", {"server.cli.main"}),
])
def test_nothing_imports_the_web_app_or_the_worker(entry, allowed):
    importers = {m for m in MODULES if entry in project_imports(m)}
    assert importers <= allowed, importers - allowed
