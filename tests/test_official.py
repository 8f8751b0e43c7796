"""This project against the official AMDIM code (github.com/Philip-Bachman/amdim-public).

tests/data/official/ holds small checkpoints in the official format and what the official code computed
from them (written by benchmarks/official_reference.py): encoder features in eval and training mode,
the multiscale NCE loss and the online classifiers' loss. Batch-norm statistics in those checkpoints
are far from their initial values, so a loader that misplaced any would fail here.
"""

import copy
import zipfile
from pathlib import Path

import pytest
import torch

from amdim_lib import load_encoder
from amdim_lib.run.build import build_encoder
from amdim_lib.run.checkpoints import save_checkpoint
from amdim_lib.core.encoder import Features, views_in_batch
from amdim_lib.core.objectives import amdim_loss, random_location
from amdim_lib.official import our_name
from amdim_lib.run.presets import get_config
from amdim_lib.run.probes import probe_loss
from amdim_lib.run.train import Runtime, build_state, train_step

DATA = Path(__file__).parent / "data" / "official"
REFERENCE = torch.load(DATA / "reference.pt", weights_only=True)
CASES = sorted(REFERENCE["cases"])


def _inputs(image_size: int, name: str) -> torch.Tensor:
    offset, scale = REFERENCE["pixels_to_inputs"]
    return (REFERENCE["pixels"][image_size][name].float() - offset) / scale


def _running_statistics_differences(encoder, official: dict) -> list[float]:
    ours = encoder.state_dict()
    names = {key: our_name(key, len(encoder.to_r7)) for key in official}
    return [(ours[names[key]].double() - value.double()).abs().max().item()
            for key, value in official.items() if names[key] in ours]


def test_the_reference_covers_both_image_sizes_both_use_bn_and_the_legacy_file_format():
    hyperparams = [torch.load(DATA / f"{name}.pth", weights_only=True)["hyperparams"] for name in CASES]
    assert {h["encoder_size"] for h in hyperparams} == {32, 128}
    assert {h["use_bn"] for h in hyperparams} == {False, True}
    assert any(not zipfile.is_zipfile(DATA / f"{name}.pth") for name in CASES)  # as saved before PyTorch 1.6


@pytest.mark.parametrize("name", CASES)
def test_official_checkpoint_gives_the_official_features(name):
    encoder, config = load_encoder(DATA / f"{name}.pth")
    hyperparams = torch.load(DATA / f"{name}.pth", weights_only=True)["hyperparams"]
    assert not encoder.training
    assert (config.image_size, config.ndf, config.n_rkhs, config.n_depth, config.use_bn, config.tclip) == (
        hyperparams["encoder_size"], hyperparams["ndf"], hyperparams["n_rkhs"], hyperparams["n_depth"],
        hyperparams["use_bn"], hyperparams["tclip"])
    running_vars = [b for n, b in encoder.state_dict().items() if n.endswith("running_var")]
    assert max((v - 1).abs().max().item() for v in running_vars) > 0.3, "the statistics must be far from their init"
    case = REFERENCE["cases"][name]
    with torch.no_grad():
        features = encoder(_inputs(config.image_size, "eval"))
    for scale in Features._fields:
        torch.testing.assert_close(getattr(features, scale), case[scale], rtol=0, atol=1e-5, msg=scale)


@pytest.mark.parametrize("name", CASES)
def test_one_pass_over_both_views_normalises_each_view_as_the_official_separate_passes(name):
    """The official training step encodes each view in its own call; views_in_batch gives the same
    features and leaves the same running statistics with both views in one batch."""
    encoder, config = load_encoder(DATA / f"{name}.pth")
    official = REFERENCE["cases"][name]["train"]
    x1, x2 = _inputs(config.image_size, "x1"), _inputs(config.image_size, "x2")
    joint = copy.deepcopy(encoder).train()
    encoder.train()
    with torch.no_grad(), views_in_batch(encoder, 2):
        both = encoder(torch.cat([x1, x2]))
    with torch.no_grad():  # both views normalised together: what the comparisons below tell apart
        together = joint(torch.cat([x1, x2]))
    for view, rows in enumerate((slice(0, len(x1)), slice(len(x1), None))):
        for scale in Features._fields:
            # Training-mode BN over 2-3 images (r1 is 1x1) divides by the spread of 2-3 numbers: the
            # float32 rounding of another batch layout or thread count (~1e-7) grows to ~2e-4 there.
            official_features = official["features"][view][scale]
            torch.testing.assert_close(getattr(both, scale)[rows], official_features, rtol=0, atol=1e-3,
                                       msg=f"view {view + 1} {scale}")
            assert (getattr(together, scale)[rows] - official_features).abs().max() > 1e-2
    assert max(_running_statistics_differences(encoder, official["running_statistics"])) < 1e-5
    assert max(_running_statistics_differences(joint, official["running_statistics"])) > 1e-2


@pytest.mark.parametrize("result", REFERENCE["loss"]["results"], ids=lambda r: f"tclip{r['tclip']:g}")
def test_official_loss_equals_amdim_loss(result):
    reference = REFERENCE["loss"]
    f1, f2 = Features(**reference["f1"]), Features(**reference["f2"])
    # The official loss draws its 5x5 sources from the global RNG (view 1's, then view 2's); a generator
    # seeded alike draws the same locations here.
    generator = torch.Generator().manual_seed(reference["seed"])
    for view, locations in zip((f1, f2), reference["locations"]):
        flat = view.r5.flatten(2)
        expected = flat[torch.arange(len(locations)), :, locations]
        assert torch.equal(random_location(view.r5, generator), expected)
    ours = amdim_loss(f1, f2, tclip=result["tclip"], reg_weight=0.05,
                      generator=torch.Generator().manual_seed(reference["seed"]))
    for our_key, official_key in (("1t5", "1t5"), ("1t7", "1t7"), ("5t5", "5t5"), ("reg", "lgt_reg")):
        torch.testing.assert_close(ours[our_key], result[official_key], rtol=1e-6, atol=1e-6, msg=our_key)
    total = result["1t5"] + result["1t7"] + result["5t5"] + result["lgt_reg"]  # the official loss_inf
    torch.testing.assert_close(ours["loss"], total, rtol=1e-6, atol=1e-6)


def test_probe_loss_is_the_official_classifier_loss():
    reference = REFERENCE["probe_loss"]
    torch.testing.assert_close(probe_loss(reference["logits"], reference["labels"]), reference["loss"],
                               rtol=1e-6, atol=1e-6)


def test_train_step_probes_read_both_views_with_the_official_loss():
    config = get_config("shapes", "smoke", warmup_steps=0, probe_dropout=0.0)
    torch.manual_seed(0)
    state = build_state(config, 10, torch.device("cpu"), 1)
    x1, x2 = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, -1, 5, 6, -1])
    state.model.train()
    state.probes.eval()  # (its BN then reads running statistics: logits do not depend on the batch)
    encoder, probes = copy.deepcopy(state.encoder), copy.deepcopy(state.probes)
    with torch.no_grad():  # each view encoded alone, in training mode: what per-view BN reproduces
        expected = probes(torch.cat([encoder(x).r1.flatten(1) for x in (x1, x2)]))
    _, probe_losses, logits = train_step(state, x1, x2, y, config, Runtime(torch.device("cpu")))
    assert set(logits) == set(expected) == {"linear", "mlp"}
    for name, out in logits.items():
        torch.testing.assert_close(out, expected[name], rtol=1e-4, atol=1e-4, msg=name)
        torch.testing.assert_close(probe_losses[name], probe_loss(out, torch.cat([y, y])), msg=name)


def test_project_checkpoints_load_through_the_same_function(tmp_path):
    config = get_config("shapes", "smoke", use_bn=True)
    encoder = build_encoder(config)
    save_checkpoint(tmp_path / "checkpoint.pt", {"config": config.to_dict(), "encoder": encoder.state_dict()})
    loaded, loaded_config = load_encoder(tmp_path / "checkpoint.pt")
    assert loaded_config == config and not loaded.training
    for key, tensor in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_files_of_neither_kind_get_one_clear_error(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, foreign)
    for path in (garbage, foreign):
        with pytest.raises(ValueError, match=r"official AMDIM checkpoint") as error:
            load_encoder(path)
        assert str(path) in str(error.value) and "workbook checkpoint" in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_encoder(tmp_path / "missing.pth")


def test_official_weights_that_disagree_with_their_hyperparams_are_refused(tmp_path):
    state = torch.load(DATA / "official-32px-bn.pth", weights_only=True)
    state["hyperparams"]["n_depth"] = 2  # the file holds three units a block
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"wrong\.pth.*do not match an encoder with use_bn=True, n_depth=2"):
        load_encoder(tmp_path / "wrong.pth")
    state["hyperparams"]["n_depth"], state["hyperparams"]["ndf"] = 3, 16
    torch.save(state, tmp_path / "wider.pth")
    with pytest.raises(ValueError, match=r"wider\.pth cannot be used: its weights do not fit the configuration it records \(size mismatch"):
        load_encoder(tmp_path / "wider.pth")


def test_official_hyperparameters_of_a_huge_model_are_refused_before_anything_is_allocated(tmp_path):
    state = torch.load(DATA / "official-32px-bn.pth", weights_only=True)
    state["hyperparams"].update(ndf=2**18, n_rkhs=2**20)  # terabytes of weights, were it built
    torch.save(state, tmp_path / "huge.pth")
    with pytest.raises(ValueError, match=r"huge\.pth cannot be used: its weights do not fit the configuration"):
        load_encoder(tmp_path / "huge.pth")


@pytest.mark.parametrize("change", [dict(ndf=[64, 64]), dict(n_depth={"units": 3}), dict(encoder_size=None)])
def test_official_hyperparameters_of_the_wrong_type_are_refused_by_name(tmp_path, change):
    state = torch.load(DATA / "official-32px-bn.pth", weights_only=True)
    state["hyperparams"].update(change)
    torch.save(state, tmp_path / "typed.pth")
    with pytest.raises(ValueError, match=r"typed\.pth: its official 'hyperparams' .* must be whole numbers"):
        load_encoder(tmp_path / "typed.pth")


def test_an_official_weight_named_by_a_number_is_left_aside_not_a_traceback(tmp_path):
    state = torch.load(DATA / "official-32px-bn.pth", weights_only=True)
    state["model"][7] = torch.zeros(3)
    torch.save(state, tmp_path / "numbered.pth")
    encoder, _ = load_encoder(tmp_path / "numbered.pth")
    assert not any(isinstance(k, int) for k in encoder.state_dict())


@pytest.mark.parametrize("dtype,value", [(torch.int64, 1.0), (torch.complex64, 1.0), (torch.float32, float("nan"))])
def test_official_weights_that_are_not_finite_floating_point_numbers_are_refused(tmp_path, dtype, value):
    state = torch.load(DATA / "official-32px-bn.pth", weights_only=True)
    name = next(k for k, t in state["model"].items() if k.startswith("encoder.") and t.is_floating_point())
    state["model"][name] = (state["model"][name] * value).to(dtype)
    torch.save(state, tmp_path / "crafted.pth")
    with pytest.raises(ValueError, match=r"crafted\.pth holds (weights that are not floating-point|non-finite weights)"):
        load_encoder(tmp_path / "crafted.pth")


def test_the_command_line_evaluates_an_official_checkpoint_on_an_image_folder(tmp_path):
    from PIL import Image

    from amdim_lib.__main__ import main
    from amdim_lib.run.checkpoints import read_json

    generator = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 12), ("test", 6)):
        for c, name in enumerate(("cat", "dog")):
            (tmp_path / "photos" / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(32, 32, 3, generator=generator) * 120 + 100 * c).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(tmp_path / "photos" / split / name / f"{i}.png")
    checkpoint = tmp_path / "official.pth"
    checkpoint.write_bytes((DATA / "official-32px-nobn.pth").read_bytes())
    assert main(["eval", "--checkpoint", str(checkpoint), "--dataset", "folder", "--data-dir",
                 str(tmp_path / "photos"), "--no-baselines"]) == 0
    assert 0.0 <= read_json(tmp_path / "eval-folder" / "eval.json")["AMDIM (trained)"]["linear"] <= 1.0
    info = read_json(tmp_path / "eval-folder" / "eval_info.json")
    # An official 32 px, 10-class model was trained on CIFAR-10: its inputs keep CIFAR's statistics.
    assert info["trained_on"] == "cifar10" and info["config"]["normalise"] == "cifar10"


@pytest.mark.parametrize("dataset, sizes, mean", [
    ("cifar10", (32, 320, 1280, 10), [125.3 / 255, 123.0 / 255, 113.9 / 255]),
    ("cifar100", (32, 320, 1280, 10), [125.3 / 255, 123.0 / 255, 113.9 / 255]),
    ("stl10", (64, 192, 1536, 8), [0.43, 0.42, 0.39]),
    ("imagenet", (128, 320, 2560, 10), [0.485, 0.456, 0.406]),
])
def test_print_config_shows_the_papers_model_and_the_official_statistics(capsys, dataset, sizes, mean):
    import json

    from amdim_lib.__main__ import main

    main(["train", "--dataset", dataset, "--preset", "paper", "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert (printed["image_size"], printed["ndf"], printed["n_rkhs"], printed["n_depth"]) == sizes
    assert printed["batch_size"] == 200 and printed["resolved_input_mean"] == pytest.approx(mean)
