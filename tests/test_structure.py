"""The library's shape, read from its source: subpackages whose imports point one way without a circle,
a core/ that holds the method and nothing else, imports of the library at the top of a module, and no
function longer than one screen."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "amdim_lib"
MAX_FUNCTION_LINES = 80

# Low to high: a module may import from its own subpackage or one below, never from one above.
# "" is the top level (the command line, bench, official checkpoints).
SUBPACKAGES = ("core", "data", "run", "analysis", "ui", "")
RANK = {name: rank for rank, name in enumerate(SUBPACKAGES)}

# What core/ may import from outside the library: PyTorch, numpy and the standard library's pure parts.
# No files (os, pathlib, json, pickle, io, shutil, tempfile), clocks, plots, widgets, progress bars or
# configuration objects (those live in run/, which core/ may not import).
CORE_MAY_IMPORT = {"__future__", "contextlib", "dataclasses", "functools", "itertools", "math", "typing",
                   "numpy", "torch", "torchvision", "PIL"}
# Words that would put a device or CPU-kernel choice into core/.
CORE_MAY_NOT_SAY = ("device.type", "torch.backends", ".cuda(", "is_autocast_enabled", "mkldnn", "channels_last")

# External modules that a function may import when it runs, not when its module loads.
LAZY_ALLOWED = {
    "matplotlib": "pyplot chooses a backend when imported; only the functions that draw need it",
    "sklearn": "slow to import; only the probes and embeddings that fit a model need it",
    "skimage": "slow to import; only the sample photographs come from it",
    "papermill": "slow to import; only running a notebook needs it",
    "nbformat": "only exporting an executed notebook needs it",
    "nbconvert": "slow to import; only exporting an executed notebook to HTML needs it",
}


def module_name(path: Path) -> str:
    """'core.encoder' for amdim_lib/core/encoder.py, 'bench' for amdim_lib/bench.py."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


@functools.cache
def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))
            if path.stem != "__init__"}


def subpackage(module: str) -> str:
    return module.rpartition(".")[0]


def library_module(node: ast.Import | ast.ImportFrom, importer: str, known: set[str]) -> list[str]:
    """The amdim_lib modules (dotted, as in `modules()`) that an import statement in `importer` names."""
    if isinstance(node, ast.Import):
        return [a.name.removeprefix("amdim_lib.") for a in node.names if a.name.startswith("amdim_lib.")]
    if node.level:
        package = subpackage(importer).split(".") if subpackage(importer) else []
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    elif node.module == "amdim_lib" or (node.module or "").startswith("amdim_lib."):
        base = node.module.removeprefix("amdim_lib").lstrip(".")
    else:
        return []
    named = [f"{base}.{a.name}" if base else a.name for a in node.names]
    found = [name for name in named if name in known]  # `from ..core import encoder` names a module
    return found or [base or "__init__"]


def function_local_imports(tree: ast.Module) -> dict[ast.AST, str]:
    """{import node: the innermost function it sits in} for every import inside a function."""
    found = {}
    for function in ast.walk(tree):  # outer functions come first, so inner ones overwrite them
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.update({node: function.name for node in ast.walk(function)
                          if isinstance(node, (ast.Import, ast.ImportFrom))})
    return found


def import_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """{module: the amdim_lib modules it imports}, at module level and inside functions."""
    known = set(trees)
    return {name: {m for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for m in library_module(node, name, known)} - {name}
            for name, tree in trees.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search for an edge back into the path)."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            circle = visit(imported, path + [module])
            if circle:
                return circle
        done.add(module)
        return None

    return next((c for c in (visit(m, []) for m in sorted(graph)) if c), None)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower subpackage into a higher one (or into the package's face)."""
    return [f"{name} ({subpackage(name) or 'top level'}) imports {imported}"
            for name, imported_modules in graph.items() for imported in sorted(imported_modules)
            if imported == "__init__" or RANK.get(subpackage(imported), len(SUBPACKAGES)) > RANK[subpackage(name)]]


def core_impurities(trees: dict[str, ast.Module], sources: dict[str, str]) -> list[str]:
    """What in core/ is not the method: imports beyond CORE_MAY_IMPORT, and device or kernel choices."""
    found = []
    for name, tree in trees.items():
        if subpackage(name) != "core":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            found += [f"{name}:{node.lineno} imports {root}" for root in roots if root not in CORE_MAY_IMPORT]
        found += [f"{name} says {word!r}" for word in CORE_MAY_NOT_SAY if word in sources[name]]
    return found


def _parse(**sources: str) -> dict[str, ast.Module]:
    return {name.replace("__", "."): ast.parse(text) for name, text in sources.items()}


def test_library_imports_are_recognised_in_every_spelling():
    known = {"core.x", "core.y", "run.z", "run.p", "ui.q", "official"}
    statements = ast.parse("from .x import a\nfrom amdim_lib.run.z import b\nimport amdim_lib.core.y\n"
                           "from ..run import p, z\nfrom amdim_lib import official\nfrom .. import load_encoder\n"
                           "import torch\nfrom numpy import pi").body
    assert [library_module(s, "core.y", known) for s in statements] == [
        ["core.x"], ["run.z"], ["core.y"], ["run.p", "run.z"], ["official"], ["__init__"], [], []]


def test_find_circle_names_a_circle_and_accepts_a_tree():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_checks_catch_an_upward_import_and_an_impure_core():
    trees = _parse(core__encoder="from ..run import presets\nimport os\n", run__presets="from ..core import encoder\n",
                   ui__viz="from ..run.presets import Config\nfrom .. import official\n", official="")
    graph = import_graph(trees)
    assert upward_imports(graph) == ["core.encoder (core) imports run.presets",
                                     "ui.viz (ui) imports official"]
    assert find_circle(graph) == ["core.encoder", "run.presets", "core.encoder"]
    sources = {"core.encoder": "if x.device.type == 'cpu': pass"}
    assert core_impurities(trees, sources) == ["core.encoder:2 imports os", "core.encoder says 'device.type'"]


def test_the_import_graph_has_no_circle():
    circle = find_circle(import_graph(modules()))
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_every_module_sits_in_a_known_subpackage():
    unknown = sorted(name for name in modules() if subpackage(name) not in RANK)
    assert not unknown, f"add their subpackages to SUBPACKAGES (or move them): {unknown}"


def test_imports_point_down_the_subpackages():
    upward = upward_imports(import_graph(modules()))
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_core_holds_the_method_and_nothing_else():
    sources = {name: (PACKAGE / f"{name.replace('.', '/')}.py").read_text() for name in modules()}
    impure = core_impurities(modules(), sources)
    assert not impure, "core/ is pure PyTorch: move these to run/, analysis/ or ui/:\n" + "\n".join(impure)


@pytest.mark.parametrize("name", sorted(modules()))
def test_function_local_imports_are_only_heavy_external_ones(name):
    wrong = []
    for node, function in function_local_imports(modules()[name]).items():
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if getattr(node, "level", 0) or any(n.split(".")[0] not in LAZY_ALLOWED for n in names):
            wrong.append(f"amdim_lib/{name}.py:{node.lineno} in {function}(): {ast.unparse(node)}")
    assert not wrong, ("move these imports to the top of the module (only " + ", ".join(LAZY_ALLOWED)
                       + " may load lazily):\n" + "\n".join(wrong))


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_lazy_import_says_why(name):
    lines = (PACKAGE / f"{name.replace('.', '/')}.py").read_text().splitlines()
    silent = [f"amdim_lib/{name}.py:{node.lineno}: {lines[node.lineno - 1].strip()}"
              for node in function_local_imports(modules()[name]) if "# lazy:" not in lines[node.lineno - 1]]
    assert not silent, "say on the line why the import waits (`# lazy: ...`):\n" + "\n".join(silent)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_function_is_longer_than_a_screen(name):
    long = [f"amdim_lib/{name}.py:{node.lineno} {node.name}(): {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(modules()[name]) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(long)
