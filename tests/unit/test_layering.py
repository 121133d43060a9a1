"""The package layering, read from the source: `offsets <- ingest <- receivers, direct`.

- `offsets/` imports nothing else of ours;
- `ingest/` (the core, its CLI, demo and testing helpers included) imports
  neither `receivers/` nor `direct/`: they register their streams in
  `ingest.sources` instead;
- `receivers/` and `direct/` do not import each other;
- the core's batch machinery never loads Kafka client code (`ingest.kafka`,
  `confluent_kafka`, `kafka`), directly or through any module of ours.

Every import counts: at module level, inside functions, under
`if TYPE_CHECKING:`, and `importlib.import_module("literal")`. An import inside a
function to dodge a cycle is still an arrow.
"""

from __future__ import annotations

import ast
import pathlib
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("offsets", "ingest", "receivers", "direct")

# Which of our packages each package may import (itself always).
ALLOWED = {
    "offsets": set(),
    "ingest": {"offsets"},
    "receivers": {"offsets", "ingest"},
    "direct": {"offsets", "ingest"},
}

CORE_MODULES = (
    "ingest.context", "ingest.graph", "ingest.dataset", "ingest.dstream", "ingest.scheduler", "ingest.state",
    "ingest.window", "ingest.checkpoint", "ingest.storage", "ingest.batch_log", "ingest.batch", "ingest.output",
    "ingest.queue_stream", "ingest.listener", "ingest.clock", "ingest.executor",
)


def is_kafka_client(module: str) -> bool:
    return (module in ("ingest.kafka", "confluent_kafka", "kafka")
            or module.startswith(("ingest.kafka.", "confluent_kafka.", "kafka.")))


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in_source(source: str, module: str, is_package: bool) -> list[Import]:
    """Every module name `source` may import, wherever the statement is."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(Import(module, target, node.lineno))
            # `from pkg import name` may import the submodule pkg.name.
            found += [Import(module, f"{target}.{alias.name}", node.lineno) for alias in node.names
                      if alias.name != "*"]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.append(Import(module, node.args[0].value, node.lineno))
    return found


def all_modules() -> dict[str, pathlib.Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


MODULES = all_modules()


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    return imports_in_source(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


ALL_IMPORTS = [imp for module in MODULES for imp in imports_of(module)]


def ours(name: str) -> str | None:
    """The module of ours that importing `name` runs, if any (a name that is
    an attribute of a module, not a module, maps to that module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def runs_when_imported(name: str) -> list[str]:
    """Our modules Python executes for `import name`: the module and its parent packages."""
    module = ours(name)
    if module is None:
        return []
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


# -- the scanner itself -------------------------------------------------------------------


def test_the_scanner_sees_imports_inside_functions_type_checking_blocks_and_relative_ones():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from receivers.receiver import Receiver\n"
        "def f():\n"
        "    import direct.stream\n"
        "    from . import sibling\n"
        "    from ..up import thing\n"
        "    importlib.import_module('confluent_kafka')\n"
    )
    names = {i.imported for i in imports_in_source(source, "ingest.sub.mod", is_package=False)}
    assert {"receivers.receiver", "receivers.receiver.Receiver", "direct.stream", "ingest.sub.sibling",
            "ingest.up.thing", "confluent_kafka"} <= names


def test_every_package_is_scanned():
    scanned = {name.split(".")[0] for name in MODULES}
    assert scanned == set(PACKAGES)
    assert "ingest.context" in MODULES and "ingest.testing.plugin" in MODULES and "ingest.cli" in MODULES


# -- the arrows -------------------------------------------------------------------------------


def arrows_against_the_layering() -> list[str]:
    bad = []
    for imp in ALL_IMPORTS:
        source_package = imp.importer.split(".")[0]
        target = ours(imp.imported)
        if target is None:
            continue
        target_package = target.split(".")[0]
        if target_package != source_package and target_package not in ALLOWED[source_package]:
            bad.append(str(imp))
    return sorted(set(bad))


def test_packages_import_only_downwards_offsets_then_ingest_then_receivers_and_direct():
    assert arrows_against_the_layering() == []


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_loads_no_kafka_client_code(module):
    assert module in MODULES, f"{module} is in CORE_MODULES but not in the source tree: update the list"
    edges: dict[str, list[Import]] = {}
    for imp in ALL_IMPORTS:
        edges.setdefault(imp.importer, []).append(imp)
    # Breadth-first over our modules, keeping the chain that reached each one.
    chain: dict[str, list[str]] = {name: [] for name in runs_when_imported(module)}
    queue = list(chain)
    offenders = []
    while queue:
        current = queue.pop(0)
        for imp in edges.get(current, []):
            here = chain[current] + [str(imp)]
            if is_kafka_client(imp.imported):
                offenders.append(" -> ".join(here))
            for nxt in runs_when_imported(imp.imported):
                if nxt not in chain:
                    chain[nxt] = here
                    queue.append(nxt)
    assert offenders == []
