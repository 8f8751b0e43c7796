"""The workbook as a course: the overview notebook (00), the exercises helper, and the HTML report a
reader gets from `python -m amdim_lib demo`."""

import base64
import math
import re
from xml.etree import ElementTree

import nbformat
import pytest
import torch

from amdim_lib.analysis.results import paper_results_table

from amdim_lib.ui import exercises
from amdim_lib.ui.html_report import write_report
from amdim_lib.ui.workbook import NOTEBOOKS_DIR, notebooks, run_notebook

OVERVIEW = NOTEBOOKS_DIR / "00_overview.ipynb"
REFERENCES = ("1906.00910", "1808.06670", "1807.03748", "1801.04062", "1905.06922", "1907.13625",
              "2002.05709", "1911.05722")


def _cells(tag: str) -> list:
    return [c for c in nbformat.read(OVERVIEW, as_version=4).cells if tag in c.metadata.get("tags", [])]


def _markdown(heading: str) -> str:
    """The markdown cell that opens with `heading`."""
    cells = [c.source for c in nbformat.read(OVERVIEW, as_version=4).cells
             if c.cell_type == "markdown" and c.source.startswith(heading)]
    assert len(cells) == 1, f"00_overview needs exactly one markdown cell starting with {heading!r}"
    return cells[0]


# ----------------------------------------------------------------------------- 00_overview


def test_overview_comes_first_with_the_workbook_parameters():
    assert notebooks()[0] == OVERVIEW, "00_overview must be the first notebook `python -m amdim_lib demo` runs"
    (parameters,) = _cells("parameters")
    assert 'output_dir = "../runs/demo/00_overview"' in parameters.source
    assert "preset =" in parameters.source and "seed =" in parameters.source


def test_every_exercise_is_followed_by_its_folded_solution():
    cells = nbformat.read(OVERVIEW, as_version=4).cells
    tags = [set(c.metadata.get("tags", [])) for c in cells]
    starts = [i for i, t in enumerate(tags) if "exercise" in t]
    assert len(starts) == 2
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(cells)
        solutions = [cells[i] for i in range(start + 1, end) if "solution" in tags[i]]
        assert cells[start].cell_type == "markdown"
        assert len(solutions) == 1, f"exercise {number + 1} needs exactly one solution cell after it"
        assert solutions[0].metadata.get("jupyter", {}).get("source_hidden") is True
        # The reader checks a numeric answer with the helper; the solution does the same with its number.
        assert "exercises.check(" in solutions[0].source
        assert any("exercises.check(" in cells[i].source and "solution" not in tags[i] for i in range(start + 1, end))


def test_notation_table_names_each_quantity_once():
    notation = _markdown("## Notation")
    for code_name in ("`x1`", "`r1`", "`r5`", "`r7`", "`batch_size`", "`n_rkhs`", "`scores`", "`tclip`",
                      "`mixture_tau`", "`mixture_alpha`"):
        rows = [line for line in notation.splitlines() if line.startswith("|") and code_name in line]
        assert len(rows) == 1, f"the notation table needs exactly one row for {code_name}"
    symbols = [line.split("|")[1].strip() for line in notation.splitlines()[4:] if line.startswith("|")]
    assert len(symbols) == len(set(symbols)), "a symbol has two rows"
    for symbol in ("$\\tau$", "$t$", "$w$", "$\\kappa$", "$q$", "$s$"):
        assert symbol in symbols, f"the notation table needs a row for {symbol}"
    assert "$f_1$" not in notation and "also written" not in notation, "one symbol per thing: no aliases"
    # Exercise 1 asks for the count of negatives: no cell above it may state it.
    above = _markdown("## Glossary") + notation
    assert "(B-1)L" not in above.replace(" ", "") and "479" not in above


def test_references_link_every_paper():
    references = _markdown("## References")
    links = re.findall(r"\]\((https?://[^)\s]+)\)", references)
    for arxiv in REFERENCES:
        assert f"https://arxiv.org/abs/{arxiv}" in links, f"References lack a link to arXiv {arxiv}"
    assert "https://github.com/Philip-Bachman/amdim-public" in links
    assert "Nguyen" in references and "Wainwright" in references and "Jordan" in references


def test_the_pipeline_figure_is_a_hand_written_svg_shown_in_markdown():
    pipeline = _markdown("## The pipeline")
    (path,) = re.findall(r"!\[[^\]]*\]\(([^)]+\.svg)\)", pipeline)
    root = ElementTree.parse(NOTEBOOKS_DIR / path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for label in ("view x1", "view x2", "encoder", "r1", "r5", "r7", "NCE", "online probes"):
        assert label in text, f"the pipeline figure lacks {label!r}"


# ----------------------------------------------------------------------------- the exercises helper


def test_expected_answers_come_from_the_library_shapes():
    # Every location of every other image: (B - 1) * L, with L = 49 for r7 and 25 for r5.
    assert exercises.expected("negatives", batch_size=480, target="r7") == 479 * 49
    assert exercises.expected("negatives", batch_size=8, target="r5") == 7 * 25
    assert exercises.expected("clipped_score", score=30, tclip=20) == pytest.approx(20 * math.tanh(1.5))
    with pytest.raises(ValueError, match="at least 2 images"):
        exercises.expected("negatives", batch_size=1)
    with pytest.raises(ValueError, match="'r5' or 'r7'"):
        exercises.expected("negatives", batch_size=4, target="r1")
    with pytest.raises(ValueError, match=r"unknown exercise 'negative'.*clipped_score"):
        exercises.expected("negative", batch_size=4)


def test_each_typical_wrong_answer_is_rejected_with_a_hint_naming_the_slip():
    torch.manual_seed(0)
    src, trg = 0.6 * torch.randn(6, 32), 0.6 * torch.randn(6, 32, 25)  # small scores: the clip changes them a little
    unclipped = exercises.expected("nce_row_loss", src=src, trg=trg, row=2, tclip=None)
    clipped = exercises.expected("nce_row_loss", src=src, trg=trg, row=2, tclip=20.0)
    assert 0 < abs(clipped - unclipped) < 1e-3, "the clip's effect is below the tolerance, as in notebook 03"
    wrong = [("negatives", 480 * 49 - 1, dict(batch_size=480, target="r7"), "own image"),
             ("clipped_score", 30, dict(score=30, tclip=20), "tanh"),
             ("infonce_ceiling", math.log(255), dict(batch_size=256), "log K, not log(K - 1)"),
             ("infonce_ceiling", 5.54, dict(batch_size=256), "log K, not log(K - 1)"),
             ("chance_loss", math.log(63 * 25), dict(batch_size=64, target="r5"), "log(1 + negatives)"),
             ("nce_row_loss", unclipped, dict(src=src, trg=trg, row=2, tclip=20.0), "tanh clip")]
    for name, answer, setting, hint in wrong:
        is_right, message = exercises.verdict(name, answer, **setting)
        assert not is_right and hint in message, (name, message)
    right = [("infonce_ceiling", 5.55, dict(batch_size=256)), ("chance_loss", math.log(1 + 63 * 25), dict(batch_size=64, target="r5")),
             ("nce_row_loss", clipped, dict(src=src, trg=trg, row=2, tclip=20.0)),
             ("negatives", 479 * 49, dict(batch_size=480, target="r7"))]
    for name, answer, setting in right:
        assert exercises.verdict(name, answer, **setting)[0], name


def test_a_prediction_is_settled_by_the_run_and_a_wrong_one_names_what_the_run_showed():
    measured = {"1t5": 0.03, "1t7": 0.06, "5t5": 1.25}  # nats each task's loss fell, as 03 measures them
    assert exercises.expected("fastest_task", measured=measured) == "5t5"
    for spelling in ("5t5", "5->5", "5→5", " 5T5 "):
        assert exercises.verdict("fastest_task", spelling, measured=measured)[0], spelling
    is_right, message = exercises.verdict("fastest_task", "1t7", measured=measured)
    assert not is_right and "this run shows '5t5', not '1t7'" in message and "1t7 0.06 nats" in message
    assert "not one of the options" in exercises.verdict("fastest_task", "1t9", measured=measured)[1]
    assert "no answer yet" in exercises.verdict("fastest_task", None, measured=measured)[1]
    # The smallest wins where the question asks for the weakest; a failed (NaN) measurement is never the answer.
    means = {"full": 0.46, "single_scale": 0.32, "dim_baseline": 0.25}
    assert exercises.expected("weakest_variant", measured=means) == "dim_baseline"
    assert exercises.expected("highest_bound", measured={"InfoNCE": 4.1, "NWJ": float("nan"), "MINE": 3.0}) == "InfoNCE"
    assert exercises.verdict("best_components", 4, measured={2: 0.40, 4: 0.52, 8: 0.49})[0]
    with pytest.raises(ValueError, match="finite measurements"):
        exercises.expected("highest_bound", measured={"NWJ": float("nan")})


def test_check_prints_one_verdict_and_never_raises_on_a_wrong_answer(capsys):
    cases = [(23471, True, "is right"), (23520, False, "too high"), (23470, False, "too low"),
             (None, False, "no answer yet"), (..., False, "no answer yet"), ("many", False, "not a number"),
             (float("nan"), False, "not a finite number"), ("23471", True, "is right")]
    for answer, right, words in cases:
        is_right, message = exercises.verdict("negatives", answer, batch_size=480, target="r7")
        assert is_right == right and words in message, (answer, message)
        exercises.check("negatives", answer, batch_size=480, target="r7")
        printed = capsys.readouterr().out
        assert printed.count("\n") == 1 and words in printed, (answer, printed)
    # Real numbers are right within a rounding margin: 18.1 for 20 tanh(1.5) = 18.103, not 18.
    assert exercises.verdict("clipped_score", 18.1, score=30, tclip=20)[0]
    assert not exercises.verdict("clipped_score", 18, score=30, tclip=20)[0]


# ----------------------------------------------------------------------------- the report


def _synthetic_notebook(path):
    """A notebook with every kind of cell the report treats specially."""
    cells = [
        ("md", "# 1. Synthetic title\n\nInline $\\alpha_1$ and display\n\n$$\\sum_{j \\neq i} e^{z_{ij}}$$\n\n"
               "Code `$HOME` stays."),
        ("md", "## 2. A numbered part"),
        ("code", "from tqdm.auto import tqdm\nimport sys\nfor _ in tqdm(range(3), desc='steps'):\n    pass\n"
                 "for i in range(4):\n    print(f'\\rstage {i}/3', end='', file=sys.stderr)\nprint(file=sys.stderr)"),
        ("code", "import ipywidgets\nipywidgets.VBox([ipywidgets.Dropdown(options=['first', 'chosen'], value='chosen',"
                 " description='policy'), ipywidgets.Image(value=bytes.fromhex("
                 "'89504e470d0a1a0a0000000d4948445200000001000000010806000000'"
                 "'1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082'), format='png')])"),
        ("code", "from IPython.display import Markdown\nMarkdown('a computed $\\\\beta^2$')"),
        ("code", "import os\nprint('PATH_MARKER', os.path.abspath(os.path.join(output_dir, 'checkpoint.pt')))"),
        ("code", "print('SOLUTION_MARKER', 6 * 7)", "solution"),
        ("code", "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()"),
        ("md", "Bars are `means`, whiskers one sd. The second sentence stays out."),
        ("code", "import matplotlib.pyplot as plt\nplt.plot([0, 1], [0, 1])\nplt.show()"),
        ("code", "import matplotlib.pyplot as plt\nfrom IPython.display import Markdown, display\nplt.plot([0, 1])\n"
                 "plt.show()\ndisplay(Markdown('The run printed $x$ this. Not this.'))"),
        ("md", "## Metrics"),
        ("code", "import json, os\nos.makedirs(output_dir, exist_ok=True)\nprint('SCAFFOLDING_MARKER')\n"
                 "json.dump({'ok': 1}, open(os.path.join(output_dir, 'metrics.json'), 'w'))", "scaffolding"),
        ("md", "## Summary\n\nDone."),
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell('preset = "demo"\noutput_dir = "PARAMETER_DEFAULT_DIR"\nseed = 0')
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters]
    for kind, source, *tags in cells:
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        notebook.cells.append(cell)
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    synthetic = _synthetic_notebook(root / "01_synthetic.ipynb")
    overview_metrics = run_notebook(OVERVIEW, root / "out" / "00_overview", preset="smoke")
    run_notebook(synthetic, root / "out" / "01_synthetic", preset="smoke")
    page = write_report([root / "out" / "00_overview" / OVERVIEW.name, root / "out" / "01_synthetic" / synthetic.name],
                        root / "report.html", title="AMDIM workbook (smoke preset)").read_text()
    return page, overview_metrics


def test_overview_runs_and_lists_every_notebook_with_its_minutes(report):
    _, metrics = report
    assert list(metrics["notebooks"]) == [p.stem for p in notebooks()]
    assert all(entry["minutes"] > 0 for entry in metrics["notebooks"].values()), "a notebook has no measured time"
    assert metrics["total_minutes_demo"] == pytest.approx(sum(e["minutes"] for e in metrics["notebooks"].values()))
    assert metrics["notebooks"]["01_views"]["title"] == "Views of a shared context"
    assert metrics["exercises"] == sorted(exercises.EXERCISES)


def test_overview_shows_the_papers_results_from_the_library(report):
    page, metrics = report
    assert metrics["paper_table"] == paper_results_table()
    assert "What AMDIM achieved" in page and "68.1" in page and "ndf 320, n_rkhs 1280, depth 10" in page


def test_every_image_in_the_report_has_alt_text_from_its_caption(report):
    page, _ = report
    alts = re.findall(r'<img[^>]*?alt="([^"]*)"', page)
    images = re.findall(r"<img\b", page)
    assert len(alts) == len(images) >= 3
    assert all(alt.strip() and "No description" not in alt for alt in alts), alts
    assert "Bars are means, whiskers one sd." in alts, "a caption below the figure is its alt text"
    assert "Figure in '1.2 A numbered part'" in alts, "without a caption below: the section it is in"
    assert "The run printed (formula) this." in alts, "a sentence the cell prints under its figure comes first"
    assert "The picture the widget shows at the settings listed beside it" in alts, "an inspector's picture too"


def test_report_opens_with_a_title_and_one_contents_entry_per_notebook(report):
    page, _ = report
    assert '<h1 class="report-title">AMDIM workbook (smoke preset)</h1>' in page
    contents = re.search(r'<nav class="contents".*?</nav>', page, re.S)[0]
    anchors = re.findall(r'<li><a href="#([^"]+)">', contents)
    assert anchors == ["nb-00_overview", "nb-01_synthetic"]
    for anchor in anchors:
        assert len(re.findall(f'<h1 class="section" id="{anchor}">', page)) == 1
    # Sections are numbered by notebook, and a notebook's own numbered parts by notebook and part.
    assert re.search(r'id="nb-00_overview">0 · Overview: AMDIM in one page</h1>', page)
    assert re.search(r'id="nb-01_synthetic">1 · Synthetic title</h1>', page)
    assert ">1.2 A numbered part<" in page and "# 1. Synthetic title" not in page


def test_report_loads_no_script_and_renders_equations_as_mathml(report):
    page, _ = report
    assert "<script" not in page and "mathjax" not in page.lower()
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in page
    assert page.count("<math ") >= 20  # the overview's notation alone has more
    # No LaTeX is left for a script to typeset: not in prose, tables, headings or markdown outputs.
    for latex in ("\\sum_{j", "$\\alpha_1$", "$\\beta^2$", "$(B - 1) L$", "\\tanh(u / c)$"):
        assert latex not in page, latex
    assert "<code>$HOME</code>" in page


def test_report_leaves_out_parameters_and_scaffolding_and_folds_solutions(report):
    page, _ = report
    assert "injected-parameters" not in page and "PARAMETER_DEFAULT_DIR" not in page
    assert "../runs/demo/00_overview" not in page  # 00's parameters cell
    assert "SCAFFOLDING_MARKER" not in page and "json.dump(metrics" not in page
    assert "check_notebook_parameters" not in page, "the parameter check is scaffolding"
    assert not re.search(r"(In|Out)(&nbsp;|\s)\[\d+\]:", page)  # no execution counts (they jump past hidden cells)


def test_report_prints_paths_relative_to_the_run_not_the_machine(report):
    page, _ = report
    printed = re.search(r"PATH_MARKER (\S+)", page)[1]
    assert printed == "out/01_synthetic/checkpoint.pt"  # relative to the report's folder (not the working one)
    assert ">Metrics<" not in page, "a heading whose section was all scaffolding should go with it"
    folded = re.findall(r'<details class="solution">.*?</details>', page, re.S)
    assert len(folded) == 3  # two in the overview, one in the synthetic notebook
    # The solution's code and its output are both inside the fold.
    assert page.count("SOLUTION_MARKER") == sum(block.count("SOLUTION_MARKER") for block in folded) == 2
    assert sum("exercises" in block for block in folded) == 2


def test_report_shows_progress_and_widgets_in_their_final_state(report):
    page, _ = report
    assert "3/3" in page and "0/3" not in page  # the tqdm widget, finished
    assert "stage 3/3" in page and "stage 0/3" not in page  # a carriage-return progress line on stderr
    assert '<progress max="3.0" value="3.0">' in page or '<progress value="3.0" max="3.0">' in page
    assert "<code>chosen</code>" in page and "Dropdown(" not in page


def test_report_embeds_the_pipeline_figure(report):
    page, _ = report
    encoded = re.search(r'<img alt="The AMDIM pipeline[^"]*" src="data:image/svg\+xml;base64,([^"]+)"', page)
    assert encoded, "the pipeline figure should be embedded in the report"
    assert base64.b64decode(encoded[1]) == (NOTEBOOKS_DIR / "figures" / "amdim_pipeline.svg").read_bytes()

