"""The notebooks read as a course: short, with exercises and references, no number typed in from a run,
test scaffolding tagged, and one set of run folders shared by `make demo` and `make lab`."""

import re

import nbformat
import pytest

from amdim_lib.ui.workbook import notebooks

MAIN_PATH = [p for p in notebooks() if p.stem[:2] <= "07"]
# Words of markdown each notebook may use; the main path reads in about half an hour. (Rebalanced when
# 00's notation table, 03's layer table and 05's three-scales table came in: 01 gave back what they took.)
WORD_BUDGET = {"00": 1030, "01": 740, "02": 1130, "03": 810, "04": 750, "05": 780, "06": 700, "07": 1020}
MAIN_PATH_WORDS = 7000
# Decimal numbers prose may state: the paper's reported figures, not numbers from a run of ours.
ALLOWED_DECIMALS = {"91.2", "70.2", "94.2", "68.1", "55.0", "0.5"}


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def _prose(source: str) -> str:
    """Markdown without LaTeX, code spans, link targets and HTML tags: what a reader takes as plain text."""
    source = re.sub(r"\$\$.*?\$\$", " ", source, flags=re.S)
    source = re.sub(r"(?<!\\)\$[^$\n]+?(?<!\\)\$", " ", source)
    source = re.sub(r"```.*?```|`[^`\n]*`", " ", source, flags=re.S)
    source = re.sub(r"\]\([^)]*\)", "]", source)
    return re.sub(r"<[^>]+>", " ", source)


def _words(path) -> int:
    return sum(len(c.source.split()) for c in _cells(path) if c.cell_type == "markdown")


def test_the_main_path_reads_in_about_half_an_hour():
    words = {p.stem[:2]: _words(p) for p in MAIN_PATH}
    assert sum(words.values()) <= MAIN_PATH_WORDS, f"{sum(words.values())} words of markdown on the main path: {words}"


@pytest.mark.parametrize("path", MAIN_PATH, ids=lambda p: p.stem)
def test_each_notebook_keeps_to_its_word_budget(path):
    assert _words(path) <= WORD_BUDGET[path.stem[:2]], f"{path.name}: {_words(path)} words"


@pytest.mark.parametrize("path", MAIN_PATH, ids=lambda p: p.stem)
def test_no_number_from_a_run_is_typed_into_the_prose(path):
    typed = [(i, number) for i, c in enumerate(_cells(path)) if c.cell_type == "markdown"
             for number in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", _prose(c.source)) if number not in ALLOWED_DECIMALS]
    assert not typed, (f"{path.name}: decimal numbers in markdown (render them from the run's metrics in a code "
                       f"cell, write them in LaTeX if they are maths, or state a range the tests check): {typed}")


@pytest.mark.parametrize("path", [p for p in MAIN_PATH if p.stem[:2] != "00"], ids=lambda p: p.stem)
def test_two_exercises_each_with_a_folded_solution(path):
    cells = _cells(path)
    tags = [set(c.metadata.get("tags", [])) for c in cells]
    starts = [i for i, t in enumerate(tags) if "exercise" in t]
    assert len(starts) >= 2, f"{path.name} needs at least two cells tagged 'exercise'"
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(cells)
        solutions = [cells[i] for i in range(start + 1, end) if "solution" in tags[i]]
        assert cells[start].cell_type == "markdown", f"{path.name}: an exercise is a markdown cell"
        assert solutions, f"{path.name}: exercise {n + 1} has no cell tagged 'solution' after it"
        assert all(s.metadata.get("jupyter", {}).get("source_hidden") is True for s in solutions), \
            f"{path.name}: exercise {n + 1}'s solution must be collapsed (metadata.jupyter.source_hidden)"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_every_notebook_ends_with_a_summary_and_references_with_links(path):
    summaries = [c for c in _cells(path) if c.cell_type == "markdown" and re.match(r"## (\d+\. )?Summary", c.source)]
    assert len(summaries) == (0 if path.stem == "00_overview" else 1), f"{path.name}: one '## Summary' cell (not 00, an overview)"
    references = [c.source for c in _cells(path) if c.cell_type == "markdown" and c.source.startswith("## References")]
    assert len(references) == 1, f"{path.name} needs one markdown cell starting with '## References'"
    assert len(re.findall(r"\]\(https?://", references[0])) >= 2, f"{path.name}: references need links"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_one_title_style_a_number_a_dot_and_the_title(path):
    title = next(c.source.splitlines()[0] for c in _cells(path) if c.cell_type == "markdown")
    assert re.match(rf"# {path.stem[:2]} · \S", title), f"{path.name}: title {title!r} is not '# {path.stem[:2]} · ...'"


@pytest.mark.parametrize("path", MAIN_PATH, ids=lambda p: p.stem)
def test_scaffolding_is_tagged_and_runs_share_one_folder(path):
    cells = _cells(path)
    untagged = [i for i, c in enumerate(cells) if c.cell_type == "code" and "metrics.json" in c.source
                and "json.dump" in c.source and "scaffolding" not in c.metadata.get("tags", [])]
    assert not untagged, f"{path.name}: the metrics-writing cells {untagged} must be tagged 'scaffolding'"
    # The reader sees the method, not the bookkeeping: parameter checks and metrics assembly live in hidden cells.
    for i, c in enumerate(cells):
        bookkeeping = "check_notebook_parameters(" in c.source or re.search(r"^metrics\[[^\]]+\] = ", c.source, re.M)
        if c.cell_type == "code" and bookkeeping:
            assert "scaffolding" in c.metadata.get("tags", []), f"{path.name}: cell {i} is bookkeeping; tag it 'scaffolding'"
            assert c.metadata.get("jupyter", {}).get("source_hidden") is True, f"{path.name}: collapse cell {i}"
    (parameters,) = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert f'output_dir = "../runs/demo/{path.stem}"' in parameters.source, \
        f"{path.name}: make lab reuses what make demo wrote: output_dir defaults to ../runs/demo/{path.stem}"
    if "train_dir =" in parameters.source:
        assert 'train_dir = "../runs/demo/04_training"' in parameters.source
