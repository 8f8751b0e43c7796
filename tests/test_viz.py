"""Unit tests of amdim_lib.ui.viz (receptive fields, summaries, figures)."""

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from amdim_lib.ui import viz  # noqa: E402
from amdim_lib.core.encoder import Encoder, count_parameters  # noqa: E402
from amdim_lib.core.objectives import tanh_clip  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # thousands of tiny ops: one thread is faster


# ----------------------------------------------------------------------------- summaries and figures

def test_encoder_summary_matches_a_real_encoder():
    summary = viz.encoder_summary(32, 8, 64, 2)
    encoder = Encoder(32, 8, 64, 2)
    assert summary["parameters"] == count_parameters(encoder)
    assert summary["r1"] == (64, 1, 1) and summary["r5"] == (64, 5, 5) and summary["r7"] == (64, 7, 7)
    assert summary["local_width"] == 32
    assert viz.encoder_summary(128, 192, 1536, 8)["parameters"] == 208_419_264  # DESIGN.md table, no memory used


def test_positive_negative_gap_and_score_image():
    scores = torch.zeros(3, 3, 4)
    scores[range(3), range(3)] = 2.0
    assert viz.positive_negative_gap(scores) == pytest.approx(2.0)
    image = viz.score_image(torch.arange(18.0).view(3, 3, 2))
    assert image.shape == (3, 6) and image[1, 0] == 6  # row = source, columns = (target image, location)


def test_to_display_inverts_the_normalisation():
    array = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    tensor = (torch.from_numpy(array).permute(2, 0, 1) - 0.5) / 0.5
    assert np.allclose(viz.to_display(tensor), array, atol=1e-6)
    assert viz.to_display(np.full((2, 2, 3), 255, np.uint8)).max() == 1.0


def test_every_figure_renders_without_warnings(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda s=32: rng.random((s, s, 3)).astype(np.float32)  # noqa: E731
    scores = torch.randn(4, 4, 49)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figures = {
            "pairs": viz.plot_view_pairs({"a": [(img(), img())] * 2, "b": [(img(), img())]}, title="t"),
            "rows": viz.plot_augmentation_rows({"x": [img()] * 3, "y": [img()]}, col_titles=["1", "2", "3"]),
            "rf": viz.plot_receptive_fields({32: img(32), 64: img(64)},
                                            footprints={32: rng.random((32, 32)), 64: rng.random((64, 64))}),
            "scores": viz.plot_score_matrix(scores),
            "tasks": viz.plot_prediction_tasks(img(), img(), 32),
            "tanh": viz.plot_tanh_clip(),
            "hist": viz.plot_score_histograms(scores * 10, {"c=5": tanh_clip(scores * 10, 5.0)}),
            "sweep": viz.plot_scale_sweep([1, 10], {"a": [1.0, 2.0]}, [0.1, 10.0]),
            "loss": viz.plot_loss_curves([{"kind": "train", "step": s, "1t5": 1.0, "1t7": 2.0, "5t5": 3.0} for s in (1, 2)]),
        }
        for name, fig in figures.items():
            assert fig.axes, name
            path = viz.save_figure(fig, tmp_path, name)
            with Image.open(path) as saved:
                assert saved.size[0] > 100
    plt.close("all")
    # The score matrix outlines one positive block per source image.
    from matplotlib.patches import Rectangle
    fig = viz.plot_score_matrix(scores)
    assert sum(isinstance(p, Rectangle) for p in fig.axes[0].patches) == 4
    plt.close("all")


def test_the_layer_table_is_read_from_the_module_and_ends_at_each_feature():
    from amdim_lib.core.encoder import Encoder
    from amdim_lib.core.geometry import receptive_fields
    from amdim_lib.ui.viz import encoder_layers

    for size in (32, 64, 128):
        encoder = Encoder(size, 4, 64 if size == 32 else 64, 1)
        rows = encoder_layers(encoder).splitlines()[2:]
        fields = receptive_fields(size, encoder)
        tapped = {row.split("|")[5].strip().split(" ")[0]: row for row in rows if row.split("|")[5].strip()}
        assert set(tapped) == {"r1", "r5", "r7"}
        for name, row in tapped.items():
            grid = fields[name].grid
            assert f"x {grid}x{grid} |" in row and f"| {fields[name].size} |" in row, (size, name, row)
