"""The public surface and the direction of dependencies."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import kalibr

SOURCE = Path(kalibr.__file__).parent


def test_all_is_sorted_and_every_name_exists() -> None:
    assert list(kalibr.__all__) == sorted(kalibr.__all__, key=lambda n: (not n.isupper(), n))
    missing = [name for name in kalibr.__all__ if not hasattr(kalibr, name)]
    assert missing == []


def _imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


_IO_MODULES = {
    "os",
    "io",
    "socket",
    "sqlite3",
    "time",
    "datetime",
    "threading",
    "asyncio",
    "subprocess",
    "pathlib",
    "urllib",
    "http",
    "logging",
    "httpx",
    "psycopg",
    "shutil",
    "tempfile",
}


def test_policies_are_pure_and_depend_on_nothing_above_them() -> None:
    for module in (SOURCE / "policies").glob("*.py"):
        for name in _imports(module):
            root = name.split(".")[0]
            assert root in {*sys.stdlib_module_names, "kalibr", "numpy"}, (module.name, name)
            assert root not in _IO_MODULES, (module.name, name)  # no I/O and no clock: state and time come in
            if root == "kalibr":
                assert name.startswith(("kalibr.policies", "kalibr._domain", "kalibr._exceptions", "kalibr._types")), (
                    module.name,
                    name,
                )


def test_the_core_never_imports_a_framework() -> None:
    frameworks = {"langchain_core", "llama_index", "dspy", "kalibr_langchain", "kalibr_llamaindex", "kalibr_dspy"}
    for module in SOURCE.rglob("*.py"):
        roots = {name.split(".")[0] for name in _imports(module)}
        assert not roots & frameworks, module


def test_stores_and_policies_never_import_the_router_or_the_service() -> None:
    for folder in ("stores", "policies"):
        for module in (SOURCE / folder).glob("*.py"):
            for name in _imports(module):
                assert not name.startswith(("kalibr._router", "kalibr.service", "kalibr.cli", "kalibr.intelligence")), (
                    module,
                    name,
                )
