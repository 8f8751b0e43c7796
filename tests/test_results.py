"""analysis.results: the paper's figures, with the encoder each was measured with."""

from amdim_lib.analysis.results import PAPER_LINEAR, PAPER_MODEL, paper_results_table
from amdim_lib.run.presets import MODEL_SIZES


def test_the_papers_table_holds_every_figure_with_its_encoder():
    lines = paper_results_table().splitlines()
    assert lines[0] == "| data set | linear (%) | encoder | source |" and len(lines) == 2 + len(PAPER_LINEAR)
    for key, linear in PAPER_LINEAR.items():
        size = MODEL_SIZES[PAPER_MODEL[key]]
        row = next(line for line in lines if f"| {linear:.1f} |" in line)
        assert f"ndf {size['ndf']}, n_rkhs {size['n_rkhs']}, depth {size['n_depth']}" in row, key
    assert "| ImageNet | 68.1 | 128 px," in paper_results_table()
