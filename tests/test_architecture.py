"""The package's shape: imports point one way (down), never in a circle, and the public API is
small, named as the README names it, and cheap to import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import headstart

PACKAGE = Path(headstart.__file__).parent

#: The layers, lowest first: a module may import from its own layer or a lower one. Texts
#: span them (reading texts sits with reading photos, a text model with the bundles, the
#: fit of texts with the fit), so each of their modules has its own place; so do the tasks
#: (regression, multi-label), each role in every task at one place ("tasks.data": the table
#: of a regression and of a multi-label fit alike).
LAYERS = [
    {
        "text",
        "tasks",
        "tasks.regression",
        "tasks.multilabel",
        "tasks.thresholds",
        "_version",
        "errors",
        "console",
        "config",
        "runfolder",
        "metrics",
        "drawing",
        "storage",
        "transferability",
        "scaling",
    },
    {"data", "models", "preprocessing", "text.data", "text.encoder", "tasks.table", "tasks.data"},
    {"inputs", "classifier", "features", "text.embeddings", "tasks.copies"},
    {
        "training",
        "auditing",
        "checks",
        "monitor",
        "diagnosis",
        "text.audit",
        "text.finetune",
        "text.label_names",
        "tasks.probe",
        "tasks.trial",
        "tasks.checks",
        "tasks.audit",
        "tasks.plan",
    },
    {
        "bundle",
        "prediction",
        "torch_model",
        "exported",
        "onnx_export",
        "loading",
        "text.predictor",
        "text.model",
        "text.exported",
        "tasks.model",
    },
    {"compare", "report"},
    {
        "stages",
        "text.checks",
        "text.scoring",
        "text.plan",
        "text.exporting",
        "tasks.training",
        "tasks.candidate",
    },
    {
        "result",
        "recipe",
        "from_runs",
        "tuning",
        "api",
        "preview",
        "printing",
        "demo",
        "publish",
        "exporting",
        "serve",
        "ranking",
        "text.recipe",
        "tasks.recipe",
    },
    {"cli", "__init__", "__main__"},
]


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for file in PACKAGE.rglob("*.py"):
        parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = file
    return found


def imports_of(name: str, file: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in it (functions included)."""
    package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module in known and module != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, file, set(found)) for name, file in found.items()}


def component(module: str) -> str:
    """``headstart.training.plan`` -> ``training``; ``headstart.text.model`` -> ``text.model``;
    ``headstart.tasks.regression.data`` -> ``tasks.data`` (see LAYERS); the package itself ->
    ``__init__``."""
    parts = module.split(".")
    if parts[1:2] == ["text"] and len(parts) > 2:
        return ".".join(parts[1:3])
    if parts[1:2] == ["tasks"] and len(parts) > 2:  # a task's module by its role:
        return f"tasks.{parts[-1]}"  # tasks.regression.data -> tasks.data
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer(graph):
    placed = set().union(*LAYERS)
    assert {component(m) for m in graph} <= placed


def test_imports_point_down_the_layers(graph):
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    upward = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if layer[component(target)] > layer[component(module)]
    ]
    assert not upward, upward


def test_no_module_imports_itself_in_a_circle(graph):
    cycles = _cycles(graph)
    assert not cycles, cycles


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_public_api_is_what_the_readme_uses():
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    for name in headstart.__all__:
        assert getattr(headstart, name) is not None
    for name in ("fit", "resume", "audit", "check", "lr_find", "evaluate", "load"):
        assert callable(getattr(headstart, name)) and f"headstart.{name}(" in readme, name
    assert headstart.fit.__module__ == "headstart.recipe"  # a function, not a module
    assert sorted(headstart.__all__) == headstart.__all__


def test_importing_the_command_line_does_not_load_pytorch():
    """So that ``headstart --help`` answers at once: torch, timm and the rest load when a
    command runs."""
    code = "import sys, headstart, headstart.cli; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr


def test_the_recipe_reads_in_five_minutes():
    """fit's orchestrator and its stages stay short: under 300 lines, no function over 60."""
    files = [PACKAGE / "recipe.py", *sorted((PACKAGE / "stages").glob("*.py"))]
    assert len((PACKAGE / "recipe.py").read_text(encoding="utf-8").splitlines()) < 300
    long = [
        f"{file.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for file in files
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, long
