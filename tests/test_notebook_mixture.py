"""Notebook 07 (mixture segmentation) at the smoke preset: it runs, and its numbers mean what they say."""

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from amdim_lib.analysis import segmentation
from amdim_lib.ui.workbook import NOTEBOOKS_DIR, run_notebook
from notebook_outputs import check_exercise_verdicts

OFFICIAL_128PX = Path(__file__).parent / "data" / "official" / "official-128px-bn.pth"
NOTEBOOK = NOTEBOOKS_DIR / "07_mixture_segmentation.ipynb"
FIGURES = ("assignment_sharpness", "training", "assignment_maps_shapes", "iou_comparison", "segmentations_compared",
           "k_ablation", "assignment_maps_photographs", "assignment_maps_cifar", "inspector")


def test_notebook_is_committed_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("preset", "output_dir", "seed", "k", "tau", "alpha", "cifar_dir"):
        assert f"{name} =" in tagged[0].source
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb07")
    images = root / "images"
    for cls, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (images / "test" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), tuple(max(0, c - 40 * i) for c in colour)).save(images / "test" / cls / f"{i}.jpg")
    out = root / "out"
    metrics = run_notebook(NOTEBOOK, out, preset="smoke", cifar_dir=str(images), checkpoint=str(OFFICIAL_128PX))
    return out, metrics


def test_an_official_checkpoint_is_segmented_too(executed):
    # The frozen official 128-px file (tests/data/official): its r7 features clustered per image.
    _, m = executed
    assert m["checkpoint"]["checkpoint"] == str(OFFICIAL_128PX) and m["checkpoint"]["image_size"] == 128
    assert 0 < m["checkpoint"]["kmeans_iou"] <= 1


def test_segmentation_numbers(executed):
    out, m = executed
    assert check_exercise_verdicts(out / NOTEBOOK.name) == 4
    assert m["preset"] == "smoke" and m["k"] == 4 and m["grid"] == 7 * m["shifts"]
    assert set(m["iou"]) == {"mixture", "kmeans_random", "centre_blob", "kmeans_trained"}
    assert set(m["iou_7x7"]) == {"mixture", "kmeans_random", "centre_blob"}
    assert all(0.0 <= v <= 1.0 for table in (m["iou"], m["iou_7x7"]) for v in table.values())
    assert m["iou_7x7"]["centre_blob"] == m["iou"]["centre_blob"]
    # The centre blob, recomputed here from the notebook's radius on the same test images.
    _, masks, _ = segmentation.shapes_batch("test", m["eval_images"], 32, seed=0)
    blob = segmentation.centre_blob(32, m["blob_radius"])
    assert m["iou"]["centre_blob"] == pytest.approx(np.mean([segmentation.iou(blob, x) for x in masks]))
    _, train_masks, _ = segmentation.shapes_batch("train", 200, 32, seed=0)
    assert m["blob_radius"] == pytest.approx(segmentation.fit_centre_blob(train_masks))
    # Per-image values behind the means; the labels are valid component maps.
    seg = np.load(out / "segmentation.npz")
    assert seg["mixture"].mean() == pytest.approx(m["iou"]["mixture"])
    assert seg["kmeans_random"].mean() == pytest.approx(m["iou"]["kmeans_random"])
    assert seg["labels"].shape == (m["eval_images"], 32, 32) and 0 <= seg["labels"].min() and seg["labels"].max() < m["k"]
    assert np.allclose(segmentation.segmentation_ious(seg["labels"], masks, m["k"]), seg["mixture"])
    # Clustering local colours finds a Shapes object far better than a centred disc, even untrained.
    assert m["iou"]["kmeans_random"] > m["iou"]["centre_blob"] + 0.1
    assert m["beats_baselines"] == (m["iou"]["mixture"] > max(m["iou"]["kmeans_random"], m["iou"]["centre_blob"]))


def test_ablation_and_training(executed):
    _, m = executed
    assert set(m["ablation"]) == {"2", "4", "8"}
    for k, row in m["ablation"].items():
        assert 0.0 <= row["iou"] <= 1.0 and 0.0 <= row["kmeans_iou"] <= 1.0 and 0.0 <= row["linear_probe"] <= 1.0
        assert 0.0 < row["entropy"] <= np.log(int(k)) + 1e-4 and np.isfinite(row["final_loss"])
        assert m["trained_now"][k] is True and m["training_seconds"][k] >= 0
    assert m["ablation"]["4"]["iou"] == pytest.approx(m["iou"]["mixture"])
    assert m["ablation"]["4"]["kmeans_iou"] == pytest.approx(m["iou"]["kmeans_random"])
    assert 0.0 <= m["random_init_linear_probe"] <= 1.0


def test_images_inspector_and_figures(executed):
    out, m = executed
    assert m["photographs"] == 6 and m["cifar_images"] == 4
    ins = m["inspector"]
    assert ins["image"].startswith("shape 1") and ins["component"] == m["k"] - 1
    assert ins["entropy_tau_0.2"] > ins["entropy_tau_5"]            # a higher temperature sharpens q
    assert sum(ins["share"]) == pytest.approx(1.0) and len(ins["share"]) == m["k"] and ins["png_bytes"] > 5000
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 5000, name
    for k in (2, 4, 8):
        model = segmentation.MixtureModel.from_run(out / f"mixture_k{k}")
        assert model.k == k and model.steps == m["steps"] and model.tau == m["tau"] and model.alpha == m["alpha"]
    executed_nb = nbformat.read(out / NOTEBOOK.name, as_version=4)
    noise = [o.get("text", "") for c in executed_nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not noise, noise                                          # no warnings printed
    shown = "".join(o.get("data", {}).get("text/markdown", "") for c in executed_nb.cells for o in c.get("outputs", []))
    # The result is rendered from this run's numbers: the mixture's IoU and the verdict against each baseline.
    blob, kmeans = m["iou"]["centre_blob"], m["iou"]["kmeans_random"]
    assert f"mean IoU of **{m['iou']['mixture']:.2f}**" in shown
    assert f"{'above' if m['iou']['mixture'] > blob else 'not above'} the centre blob ({blob:.2f})" in shown
    assert f"{'above' if m['iou']['mixture'] > kmeans else 'below'} per-image k-means on the untrained encoder " \
           f"({kmeans:.2f})" in shown
    assert json.loads((out / "metrics.json").read_text()) == m
