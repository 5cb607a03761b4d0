"""DESIGN.md §3, enforced: nothing imports upward (not even inside a function), runtime_device and runtime_edge never
import each other, spec imports nothing else of covspec, and no private name is imported from another module."""

from __future__ import annotations

import ast
from pathlib import Path

import covspec

ROOT = Path(covspec.__file__).parent
# lowest first; a module may import its own layer and those below it
LAYERS = [
    {"errors", "cpus", "apikey"},
    {"spec", "protocol"},
    {"bundle"},
    {"models"},
    {"runtime_device", "runtime_edge", "reduce", "link"},
    {"export", "quant"},
    {"profile"},
    {"bench", "distill"},
    {"demo"},
    {"cli"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _package(module: str) -> str:
    """``covspec.runtime_edge.app`` -> ``runtime_edge``; ``covspec.errors`` -> ``errors``."""
    return module.split(".")[1]


def _imports() -> list[tuple[str, str, tuple[str, ...], int]]:
    """(importing module, imported covspec module, names, line) for every import statement, at any depth."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = "covspec." + ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = tuple(alias.name for alias in node.names)
                found.append((module, node.module, names, node.lineno))
            elif isinstance(node, ast.Import):
                found.extend((module, alias.name, (), node.lineno) for alias in node.names)
    return [f for f in found if f[1] == "covspec" or f[1].startswith("covspec.")]


def test_every_package_has_a_layer() -> None:
    packages = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()}
    packages -= {"__init__", "__pycache__"}
    assert packages <= set(LEVEL), packages - set(LEVEL)


def test_nothing_imports_upward() -> None:
    upward = [
        f"{src}:{line} imports {dst}"
        for src, dst, _, line in _imports()
        if dst != "covspec" and LEVEL[_package(dst)] > LEVEL[_package(src)]
    ]
    assert upward == []


def test_the_two_runtimes_never_import_each_other_and_spec_imports_nothing() -> None:
    pairs = {(_package(src), _package(dst)) for src, dst, _, _ in _imports() if dst != "covspec"}
    assert ("runtime_device", "runtime_edge") not in pairs and ("runtime_edge", "runtime_device") not in pairs
    assert {dst for src, dst in pairs if src == "spec"} <= {"spec"}


def test_no_private_name_is_imported_from_another_module() -> None:
    private = [
        f"{src}:{line} imports {name} from {dst}"
        for src, dst, names, line in _imports()
        for name in names
        if name.startswith("_") and dst != src
    ]
    assert private == []
