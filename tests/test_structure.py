"""The library's shape, read from its source: imports point one way without a circle, imports of the
library sit at the top of a module, and no function grows past one screen."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "amdim_lib"
MAX_FUNCTION_LINES = 80

# Low to high: a module may import from its own rank or below, never from above.
LAYERS = [
    ("shapes", "datasets", "views", "batched_views"),                               # data and views
    ("encoder", "geometry"),                                                         # the encoder
    ("distributed", "objectives", "mixture", "bounds", "reference"),                 # objectives
    ("presets",),                                                                    # configurations
    ("checkpoints", "runfolder"),                                                    # run files, the run folder
    ("probes", "build", "official", "official_code", "memory"),                      # factories, official code and
                                                                                     # checkpoints
    ("train", "supervised"),                                                         # training loops
    ("evaluate", "segmentation", "sweep", "bench", "results", "exercises"),          # analysis
    ("viz", "report", "segmentation_plots", "widgets", "mixture_widgets"),           # figures and UI
    ("html_report", "workbook"),                                                     # the notebooks' report
    ("__main__",),                                                                   # the command line
]
RANK = {module: rank for rank, modules in enumerate(LAYERS) for module in modules}

# External modules that a function may import when it runs, not when its module loads.
LAZY_ALLOWED = {
    "matplotlib": "pyplot chooses a backend when imported; only the functions that draw need it",
    "sklearn": "slow to import; only the probes and embeddings that fit a model need it",
    "skimage": "slow to import; only the sample photographs come from it",
    "papermill": "slow to import; only running a notebook needs it",
    "nbformat": "only exporting an executed notebook needs it",
    "nbconvert": "slow to import; only exporting an executed notebook to HTML needs it",
}


@functools.cache
def modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))
            if path.stem != "__init__"}


def library_module(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The amdim_lib modules an import statement names ([] for anything else)."""
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("amdim_lib.")]
    if node.level == 1 or node.module == "amdim_lib" or (node.module or "").startswith("amdim_lib."):
        base = (node.module or "").removeprefix("amdim_lib").lstrip(".")
        return [base.split(".")[0]] if base else [a.name for a in node.names]  # `from . import x, y`
    return []


def function_local_imports(tree: ast.Module) -> dict[ast.AST, str]:
    """{import node: the innermost function it sits in} for every import inside a function."""
    found = {}
    for function in ast.walk(tree):  # outer functions come first, so inner ones overwrite them
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.update({node: function.name for node in ast.walk(function)
                          if isinstance(node, (ast.Import, ast.ImportFrom))})
    return found


def import_graph() -> dict[str, set[str]]:
    """{module: the amdim_lib modules it imports}, at module level and inside functions."""
    return {name: {m for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for m in library_module(node)} - {name}
            for name, tree in modules().items()}


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


def test_library_imports_are_recognised_in_every_spelling():
    statements = ast.parse("from .x import a\nfrom amdim_lib.y import b\nimport amdim_lib.z\n"
                           "from . import p, q\nfrom amdim_lib import r\nimport torch\nfrom numpy import pi").body
    assert [library_module(s) for s in statements] == [["x"], ["y"], ["z"], ["p", "q"], ["r"], [], []]


def test_find_circle_names_a_circle_and_accepts_a_tree():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_has_no_circle():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_every_module_has_a_layer():
    assert set(modules()) == set(RANK), "add new modules to LAYERS (or remove gone ones)"


def test_imports_point_down_the_layers():
    upward = [f"{name} (rank {RANK[name]}) imports {imported} (rank {RANK[imported]})"
              for name, imported_modules in import_graph().items() for imported in sorted(imported_modules)
              if RANK.get(imported, -1) > RANK.get(name, len(LAYERS))]
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


@pytest.mark.parametrize("name", sorted(RANK))
def test_function_local_imports_are_only_heavy_external_ones(name):
    wrong = []
    for node, function in function_local_imports(modules()[name]).items():
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if getattr(node, "level", 0) or any(n.split(".")[0] not in LAZY_ALLOWED for n in names):
            wrong.append(f"amdim_lib/{name}.py:{node.lineno} in {function}(): {ast.unparse(node)}")
    assert not wrong, ("move these imports to the top of the module (only " + ", ".join(LAZY_ALLOWED)
                       + " may load lazily):\n" + "\n".join(wrong))


@pytest.mark.parametrize("name", sorted(RANK))
def test_every_lazy_import_says_why(name):
    lines = (PACKAGE / f"{name}.py").read_text().splitlines()
    silent = [f"amdim_lib/{name}.py:{node.lineno}: {lines[node.lineno - 1].strip()}"
              for node in function_local_imports(modules()[name]) if "# lazy:" not in lines[node.lineno - 1]]
    assert not silent, "say on the line why the import waits (`# lazy: ...`):\n" + "\n".join(silent)


@pytest.mark.parametrize("name", sorted(RANK))
def test_no_function_is_longer_than_a_screen(name):
    long = [f"amdim_lib/{name}.py:{node.lineno} {node.name}(): {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(modules()[name]) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(long)
