"""Segmentation by mixture features: assignment maps, IoU and baselines, training, the inspector (amdim_lib.analysis.segmentation)."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from amdim_lib.data import datasets
from amdim_lib.analysis import segmentation
from amdim_lib.core import views
from amdim_lib.core.encoder import Encoder
from amdim_lib.core.mixture import MixtureHead
from amdim_lib.run.presets import get_config
from amdim_lib.analysis.segmentation import MixtureModel, dense_local_features, upsample_maps


def _tiny_model(k=3, seed=0):
    torch.manual_seed(seed)
    config = get_config("shapes", "smoke")
    encoder = Encoder(32, config.ndf, config.n_rkhs, config.n_depth)
    return MixtureModel(encoder, MixtureHead(config.n_rkhs, k), config).eval()




# ----------------------------------------------------------------------------- maps

def test_dense_features_interleave_shifted_copies():
    torch.manual_seed(4)
    encoder = Encoder(32, 4, 32, 1).eval()
    x = torch.randn(2, 3, 32, 32)
    r7 = encoder(x).r7
    dense = dense_local_features(encoder, x, shifts=4)
    assert dense.shape == (2, 32, 28, 28)
    assert torch.allclose(dense[..., ::4, ::4], r7, atol=1e-5)
    moved = torch.roll(x, shifts=(-2, -1), dims=(2, 3))  # content moved up 2 px, left 1 px
    assert torch.allclose(encoder(moved).r7[..., :6, :6], dense[..., 2::4, 1::4][..., :6, :6], atol=1e-5)
    assert torch.equal(dense_local_features(encoder, x, 1), r7)
    with pytest.raises(ValueError):
        dense_local_features(encoder, x, shifts=3)


def test_upsampling_puts_each_value_at_its_receptive_field_centre():
    maps = torch.arange(49.0).view(1, 1, 7, 7)
    up = upsample_maps(maps, 32)[0, 0]
    assert up.shape == (32, 32)
    # location (r, c) of the 32 px r7 grid looks at pixels 4r..4r+7: its centre lies between pixels 4r+3 and 4r+4
    for r, c in ((1, 1), (3, 5), (5, 2)):  # interior: the 2x2 pixels around a centre average to its value
        assert up[4 * r + 3:4 * r + 5, 4 * c + 3:4 * c + 5].mean().item() == pytest.approx(7 * r + c)
    assert up[0, 0] == 0 and up[-1, -1] == 48                   # borders take the outermost values
    q = torch.softmax(torch.randn(2, 3, 28, 28), 1)
    assert torch.allclose(upsample_maps(q, 32, shifts=4).sum(1), torch.ones(2, 32, 32), atol=1e-5)


def test_component_scores_and_segmentation_on_a_tiny_model():
    model = _tiny_model(k=3)
    x, masks, labels = segmentation.shapes_batch("test", 6, 32)
    assert x.shape == (6, 3, 32, 32) and masks.shape == (6, 32, 32) and masks.dtype == bool
    bank = segmentation.negative_bank(model.encoder, segmentation.shapes_batch("test", 5, 32, start=50)[0])
    s = segmentation.component_scores(model, x, bank, shifts=2)
    assert s.shape == (6, 3, 14, 14) and (s <= 0).all()
    in_batch = segmentation.component_scores(model, x, None, shifts=1)
    assert in_batch.shape == (6, 3, 7, 7)
    with pytest.raises(ValueError):
        segmentation.component_scores(model, x[:1], None)
    result = segmentation.evaluate_segmentation(model, x, masks, bank, shifts=2)
    assert result["labels"].shape == (6, 32, 32) and 0 <= result["mean"] <= 1
    assert np.allclose(result["per_image"], segmentation.segmentation_ious(result["labels"], masks, 3))


def test_iou_best_match_blob_and_kmeans():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert segmentation.iou(a, a) == 1.0 and segmentation.iou(a, ~a) == 0.0 and segmentation.iou(a[:, :2], a[:, :2] & False) == 0.0
    labels = np.array([[0, 0, 1, 1]] * 4)
    mask = np.zeros((4, 4), bool)
    mask[:, 2:] = True
    assert segmentation.best_match_iou(labels, mask, 2) == (1.0, 1)
    blob = segmentation.centre_blob(32, 8)
    assert blob[16, 16] and not blob[0, 0] and abs(blob.sum() - math.pi * 64) < 12
    masks = np.stack([segmentation.centre_blob(32, 6)] * 3)
    assert abs(segmentation.fit_centre_blob(masks) - 6) < 1.0
    # two well separated groups of locations (left / right half) are found by k-means
    feats = torch.zeros(1, 4, 7, 7)
    feats[0, 0, :, 4:] = 5.0
    onehot = segmentation.kmeans_probabilities(feats + 0.01 * torch.randn(1, 4, 7, 7), 2)
    assert onehot.sum(1).eq(1).all()
    groups = onehot[0].argmax(0)
    assert (groups[:, :4] == groups[0, 0]).all() and (groups[:, 4:] != groups[0, 0]).all()
    # per image, a uniform image still splits into k groups; over the data set, it stays one group
    # when another image holds the other cluster
    pair = torch.stack([torch.zeros(4, 7, 7), torch.full((4, 7, 7), 5.0)]) + 0.01 * torch.randn(2, 4, 7, 7)
    per_image, pooled = (segmentation.kmeans_probabilities(pair, 2, per_image=p).argmax(1) for p in (True, False))
    assert all(len(g.unique()) == 2 for g in per_image)
    assert [len(g.unique()) for g in pooled] == [1, 1] and pooled[0, 0, 0] != pooled[1, 0, 0]


def test_images_to_tensor_and_photographs():
    photos = datasets.load_photographs(32, names=("astronaut", "camera"))
    assert set(photos) == {"astronaut", "camera"} and all(p.size == (32, 32) and p.mode == "RGB" for p in photos.values())
    x = views.images_to_tensor(photos, 32)
    assert x.shape == (2, 3, 32, 32)
    assert views.images_to_tensor([np.zeros((40, 50, 3), np.float32)], 32).shape == (1, 3, 32, 32)
    assert datasets.load_folder_images("/nonexistent/folder", 32) == {}


def test_load_folder_images(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "test" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), (i * 100, 50, 0)).save(tmp_path / "test" / cls / f"{i}.jpg")
    images = datasets.load_folder_images(tmp_path, 32, n=3)
    assert len(images) == 3 and {name.split("/")[0] for name in images} == {"cat", "dog"}
    assert all(img.size == (32, 32) for img in images.values())


# ----------------------------------------------------------------------------- training and checkpoints

def test_train_mixture_resumes_reloads_and_refuses_other_runs(tmp_path, smoke_config):
    """train_mixture is AMDIM's training loop with the mixture: a run stopped early resumes to the
    uninterrupted run's weights, a finished run is loaded (not retrained), and a folder holding a run
    of other settings, or one without a mixture, is refused with a message that says what to do."""
    from amdim_lib.run.build import budget_config
    from amdim_lib.run.train import train

    config = smoke_config.replace(train_size=64, test_size=32, batch_size=16, warmup_steps=1, mixture_k=2,
                                  probe_dropout=0.0, log_every=2)
    model = segmentation.train_mixture(config, tmp_path / "straight", steps=5)
    assert model.steps == 5 and model.k == 2 and model.tau == config.mixture_tau and model.seconds > 0
    assert [r["step"] for r in model.history] == [2, 4, 5]  # every log_every updates, and the last one
    assert all(math.isfinite(r["mix"]) and len(r["usage"]) == 2 and abs(sum(r["usage"]) - 1) < 1e-3
               and 0 <= r["entropy"] <= math.log(2) + 1e-6 for r in model.history)

    run_config, budget = budget_config(config, 5)
    train(run_config, tmp_path / "resumed", stop_at_step=2, progress=False)  # as if interrupted at update 2
    resumed, trained = segmentation.load_or_train(tmp_path / "resumed", config, steps=5)
    assert trained and resumed.steps == 5 and [r["step"] for r in resumed.history] == [2, 4, 5]
    x = segmentation.shapes_batch("test", 4, 32)[0]
    torch.testing.assert_close(segmentation.component_scores(resumed, x), segmentation.component_scores(model, x),
                               rtol=0, atol=1e-5)

    again, trained = segmentation.load_or_train(tmp_path / "straight", config, steps=5)
    assert not trained and again.history == model.history and again.seconds == 0
    torch.testing.assert_close(segmentation.component_scores(again, x), segmentation.component_scores(model, x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"different configuration \(mixture_k 2 -> 3\)"):
        segmentation.load_or_train(tmp_path / "straight", config.replace(mixture_k=3), steps=5)
    with pytest.raises(ValueError, match="mixture_k"):
        segmentation.train_mixture(config.replace(mixture_k=0), tmp_path / "plain", steps=1)
    train(config.replace(mixture_k=0, epochs=1), tmp_path / "plain", progress=False)
    with pytest.raises(ValueError, match="without a mixture head"):
        MixtureModel.from_run(tmp_path / "plain")


# ----------------------------------------------------------------------------- the inspector

@pytest.fixture(scope="module")
def inspector_parts():
    model = _tiny_model(k=3, seed=5)
    x, _, _ = segmentation.shapes_batch("test", 2, 32)
    from amdim_lib.ui.viz import to_display
    images = {"shape 0": to_display(x[0]), "shape 1": to_display(x[1])}
    bank = segmentation.negative_bank(model.encoder, segmentation.shapes_batch("test", 4, 32, start=20)[0])
    return model, images, bank


def test_inspect_callback(inspector_parts):
    from amdim_lib.ui.mixture_widgets import image_scores, inspect, inspector_figure
    model, images, bank = inspector_parts
    scores = image_scores(model, images["shape 0"], bank, shifts=2)
    assert scores.shape == (3, 14, 14)
    soft, sharp = inspect(scores, 32, 0.1, 2), inspect(scores, 32, 10.0, 2)
    assert soft["q"].shape == (3, 32, 32) and np.allclose(soft["q"].sum(0), 1, atol=1e-5)
    assert soft["entropy"] > sharp["entropy"]
    assert np.array_equal(sharp["labels"], sharp["q"].argmax(0)) and sharp["share"].sum() == pytest.approx(1)
    with pytest.raises(ValueError):
        inspect(scores, 32, 0.0, 2)
    fig = inspector_figure(images["shape 0"], sharp, component=2, opacity=0.3)
    assert len(fig.axes) >= 3 + 3
    with pytest.raises(ValueError):
        inspector_figure(images["shape 0"], sharp, component=3)


def _png_bytes(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(name, content):
    """One entry of an ipywidgets 8 FileUpload value, as the browser sends it."""
    import datetime
    return {"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
            "last_modified": datetime.datetime.now(datetime.timezone.utc)}


def test_inspector_widget_responds_to_its_controls(inspector_parts):
    from amdim_lib.ui.mixture_widgets import image_scores, inspect, mixture_inspector
    model, images, bank = inspector_parts
    widget = mixture_inspector(model, images, bank, shifts=2, tau=1.0)
    first_png, first_scores = bytes(widget.figure.value), widget.scores
    assert first_png.startswith(b"\x89PNG") and widget.result["q"].shape == (3, 32, 32)
    expected = inspect(image_scores(model, images["shape 0"], bank, 2), 32, 1.0, 2)
    assert np.allclose(widget.result["q"], expected["q"], atol=1e-6)

    widget.image.value = "shape 1"                      # another image: new scores, new maps
    assert not torch.allclose(widget.scores, first_scores)
    assert np.allclose(widget.result["q"], inspect(image_scores(model, images["shape 1"], bank, 2), 32, 1.0, 2)["q"],
                       atol=1e-6)
    before = widget.result["entropy"]
    widget.tau.value = 10.0                             # sharper assignments
    assert widget.result["tau"] == pytest.approx(10.0) and widget.result["entropy"] < before
    png = bytes(widget.figure.value)
    widget.component.value = 2                          # only the figure changes
    assert bytes(widget.figure.value) != png and "component 2" in widget.status.value
    png = bytes(widget.figure.value)
    widget.opacity.value = 0.9
    assert bytes(widget.figure.value) not in (png, first_png)

    widget.upload.value = (_upload("red.png", _png_bytes((200, 10, 10))),)
    assert widget.image.value == "upload: red.png" and "upload: red.png" in widget.image.options
    assert widget.display_image.shape == (32, 32, 3) and widget.display_image[..., 0].mean() > 0.7
    widget.upload.value = (_upload("junk.png", b"junk"),)
    assert "junk.png" in widget.error and "junk.png" in widget.status.value
    assert widget.image.value == "upload: red.png"


def test_decode_upload_accepts_both_ipywidgets_formats():
    from amdim_lib.ui.mixture_widgets import decode_upload
    new = decode_upload(({"name": "a.png", "content": memoryview(_png_bytes((0, 0, 255)))},))
    old = decode_upload({"b.png": {"metadata": {"name": "b.png"}, "content": _png_bytes((0, 255, 0))}})
    assert list(new) == ["a.png"] and list(old) == ["b.png"] and new["a.png"].mode == "RGB"


def test_the_photograph_grid_titles_do_not_run_into_each_other():
    from amdim_lib.ui import segmentation_plots
    photographs = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]
    from_a_folder = [f"{c}/{c}_s_00{i:04d}" for i, c in enumerate(["automobile", "airplane", "truck", "horse"] * 2)]
    for names in (photographs, from_a_folder):  # cifar_dir's images are titled "class/file"
        images = [np.zeros((32, 32, 3)) for _ in names]
        labels = np.zeros((len(names), 32, 32), dtype=int)
        fig = segmentation_plots.plot_assignment_maps(images, {"7×7 grid": labels}, 4, titles=names)
        renderer = fig.canvas.get_renderer()
        boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes[:len(names)]]
        for left, right in zip(boxes, boxes[1:]):
            assert left.x1 < right.x0, (names, left, right)
        assert fig.axes[1].title.get_text().startswith(names[1].split("/")[0].replace("_", " "))
