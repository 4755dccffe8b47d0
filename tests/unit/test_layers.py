"""The import layers, read from the source (AST, no import runs): the app (``lib``, ``main``) and the CLI
(``mri_label``) meet only in ``mri_label.core``, and nothing imports in a circle.

Layers, lowest first::

    mri_label.core      imports no lib, main or mri_label module outside mri_label.core
    lib, main           the MONAI Label app; of mri_label only mri_label.core
    mri_label           the CLI; may import the app (it runs it in process) and core

Every ``import`` counts, at module level or inside a function (a lazy import still closes a cycle, it only
moves the failure to run time). Importing ``a.b.c`` runs ``a`` and ``a.b`` first, so those package edges count
for cycles too.
"""

import ast
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "mri_app"
#: (folder on sys.path, top-level package or module, file or folder)
SOURCES = ((APP, "lib"), (APP, "main.py"), (ROOT, "mri_label"))
CORE = "mri_label.core"


def module_files() -> Dict[str, Path]:
    """Module name -> source file, for every module of the app and of ``mri_label``."""
    modules = {}
    for base, top in SOURCES:
        path = base / top
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for file in files:
            parts = list(file.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = file
    return modules


def _resolve(name: str, known: Iterable[str]) -> Optional[str]:
    """The longest known module that ``name`` is or lies in (``lib.datastore.bad_input`` -> ``lib.datastore``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def direct_imports(module: str, file: Path, known: Set[str]) -> Set[str]:
    """Known modules that ``module`` names in any ``import`` statement, anywhere in its file."""
    is_package = file.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(file.read_bytes(), str(file))):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            # `from a import b`: the submodule a.b when there is one, else the names come from a
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the modules it imports directly (no package parents)."""
    files = module_files()
    return {module: direct_imports(module, file, set(files)) for module, file in files.items()}


def with_parents(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """``graph`` plus, for every import of ``a.b.c``, the packages ``a`` and ``a.b`` it runs first."""
    full = {}
    for module, targets in graph.items():
        edges = set(targets)
        for target in targets:
            parts = target.split(".")
            edges.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in graph)
        # a package's own __init__ runs before its modules, but that is not an import *by* the module
        edges.discard(module)
        full[module] = {e for e in edges if not module.startswith(e + ".")}
    return full


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted; sorted by first module."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(root: str) -> None:  # iterative, so no recursion limit is reached on long chains
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_app(module: str) -> bool:
    return in_package(module, "lib") or module == "main"


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_scan_sees_lazy_imports_and_parents(graph):
    """Guards the test itself: a function-level import is an edge, and a package's parents are found."""
    assert "main" in graph["mri_label.evaluate"]  # `from main import MRIApp` inside app_class/load_app
    assert "lib.datastore" in graph["lib.routes"]
    assert "lib.infers" in with_parents(graph)["lib.configs.tumor_gate"]  # via lib.infers.classifier


def test_cycle_finder_finds_a_lazy_cycle():
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(toy) == [["a", "b", "c"]] and cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(graph):
    """No circle among the app's modules, among mri_label's, or across them (lazy imports count)."""
    found = cycles(with_parents(graph))
    detail = [[f"{m} -> {sorted(set(graph[m]) & set(c))}" for m in c] for c in found]
    assert not found, f"import cycles: {detail}"


def test_the_app_imports_only_the_core_of_mri_label(graph):
    edges = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if is_app(module)
        for target in targets
        if in_package(target, "mri_label") and not in_package(target, CORE)
    )
    assert not edges, f"the app imports the CLI package (only {CORE} is shared): {edges}"


def test_the_core_imports_no_app_and_no_cli(graph):
    """mri_label.core (and the package __init__ files run before it) import nothing above the core."""
    assert CORE in graph, f"{CORE} is missing"
    edges = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if in_package(module, CORE) or module == "mri_label"
        for target in targets
        if is_app(target) or (in_package(target, "mri_label") and not in_package(target, CORE))
    )
    assert not edges, f"{CORE} imports the app or the CLI: {edges}"
