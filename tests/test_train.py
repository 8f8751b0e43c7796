import math
import os

import pytest
import torch

from amdim_lib.run.presets import Config, get_config
from amdim_lib.run.checkpoints import load_checkpoint, save_checkpoint
from amdim_lib.run.build import build_optimisation, lr_factor
from amdim_lib.run.train import EpochSampler, Runtime, build_state, train, train_step
from amdim_lib.run.build import encoder_from_checkpoint, select_device
from amdim_lib.run.runfolder import read_metrics


@pytest.fixture
def tiny():
    # Two epochs of 4 steps: small enough to train several times in a test.
    return get_config("shapes", "smoke", train_size=64, test_size=32, batch_size=16, epochs=2)


def test_smoke_training_writes_checkpoint_metrics_and_config(tiny, tmp_path):
    summary = train(tiny, tmp_path, progress=False)
    assert summary["finished"] and summary["steps"] == 8
    records = read_metrics(tmp_path)
    train_records = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train_records] == list(range(1, 9))
    assert {"loss", "1t5", "1t7", "5t5", "reg", "lr", "probe_linear_acc", "probe_mlp_acc"} <= set(train_records[0])
    assert [r["epoch"] for r in evals] == [1, 2] and 0 <= evals[-1]["test_linear_acc"] <= 1
    assert (tmp_path / "config.json").exists()
    encoder, config = encoder_from_checkpoint(tmp_path / "checkpoint.pt")
    assert config == tiny and not encoder.training


def test_resumed_run_matches_an_uninterrupted_one(tiny, tmp_path):
    train(tiny, tmp_path / "straight", progress=False)
    # Interrupted mid-epoch (after step 3 of 4), then resumed to the end.
    partial = train(tiny, tmp_path / "resumed", stop_at_step=3, progress=False)
    assert partial["steps"] == 3 and not partial["finished"]
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 3
    train(tiny, tmp_path / "resumed", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    for part in ("encoder", "probes"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name} differs after resuming"
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed") if r["kind"] == "train"]
    assert steps == list(range(1, 9)), "the metrics log has each step once"


def test_resume_refuses_a_different_configuration(tiny, tmp_path):
    train(tiny, tmp_path, stop_at_step=1, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train(tiny.replace(lr=1e-3), tmp_path, resume=True, progress=False)


def test_learning_rate_schedule():
    assert lr_factor(0, 500, [], 0.2) == pytest.approx(1 / 500)
    assert lr_factor(499, 500, [], 0.2) == 1.0
    assert lr_factor(1000, 500, [1000, 2000], 0.2) == pytest.approx(0.2)
    assert lr_factor(2500, 500, [1000, 2000], 0.2) == pytest.approx(0.04)
    assert lr_factor(0, 0, [], 0.2) == 1.0


def test_epoch_sampler_is_seeded_sharded_and_resumable():
    full = list(EpochSampler(10, epoch=0, seed=1, batch_size=2))
    assert sorted(i for _, i in full) == list(range(10)) and all(e == 0 for e, _ in full)
    assert full == list(EpochSampler(10, epoch=0, seed=1, batch_size=2))
    assert full != list(EpochSampler(10, epoch=1, seed=1, batch_size=2))
    assert list(EpochSampler(10, epoch=0, seed=1, batch_size=2, start=4)) == full[4:]
    assert len(list(EpochSampler(10, 0, 1, batch_size=4))) == 8, "an incomplete last batch is dropped"
    # Two ranks: each takes its half of every global batch of 4, together exactly one process's batches.
    single = [i for _, i in EpochSampler(10, 0, 1, batch_size=4)]
    shards = [[i for _, i in EpochSampler(10, 0, 1, batch_size=4, rank=r, world_size=2)] for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4
    for b in range(2):
        assert shards[0][2 * b:2 * b + 2] + shards[1][2 * b:2 * b + 2] == single[4 * b:4 * b + 4]
    with pytest.raises(ValueError, match="divisible"):
        EpochSampler(10, 0, 1, batch_size=3, world_size=2)


def test_checkpoints_are_atomic_and_loaded_safely(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "weights": torch.ones(2)})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"], "no temporary file is left behind"

    class Payload:  # a pickle that would run code when loaded unsafely
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "amdim-workbook-checkpoint", "version": 1, "x": Payload()}, evil)
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not an AMDIM workbook checkpoint"):
        load_checkpoint(foreign)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_checkpoint(truncated)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("changes,message", [
    (dict(image_size=48), "32, 64, 128"),
    (dict(n_rkhs=16), "n_rkhs >= 32"),
    (dict(batch_size=1), ">= 2"),
    (dict(epochs=0), "epochs"),
    (dict(augment="heavy"), "full"),
    (dict(tasks=("1t9",)), "subset"),
    (dict(num_workers=-1), "num_workers"),
    (dict(amp="fp8"), "bf16"),
])
def test_invalid_configurations_name_the_allowed_values(changes, message):
    with pytest.raises(ValueError, match=message):
        get_config("shapes", "smoke", **changes)


def test_config_round_trips_through_a_dict():
    config = get_config("shapes", "demo")
    assert Config.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown configuration keys"):
        Config.from_dict({"learning_rate": 1})


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")


def test_unknown_dataset_and_preset_are_named():
    with pytest.raises(ValueError, match="shapes"):
        get_config("mnist", "demo")
    with pytest.raises(ValueError, match="smoke"):
        get_config("shapes", "huge")


def test_mixture_switch_trains_the_head_and_resumes(tiny, tmp_path):
    # mixture_k > 0: the 1t7 task goes through k mixture components whose head is trained and saved.
    config = tiny.replace(mixture_k=2)
    train(config, tmp_path / "straight", progress=False)
    train(config, tmp_path / "resumed", stop_at_step=3, progress=False)
    train(config, tmp_path / "resumed", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert set(a["mixture"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    for name, tensor in a["mixture"].items():
        assert torch.equal(tensor, b["mixture"][name]), name
    records = [r for r in read_metrics(tmp_path / "straight") if r["kind"] == "train"]
    assert "mix" in records[-1] and "1t7" not in records[-1] and 0 < records[-1]["entropy"] <= math.log(2) + 1e-6
    with pytest.raises(ValueError, match="mixture_k"):
        tiny.replace(mixture_k=2, tasks=("1t5",))


def test_train_until_never_passes_off_a_partial_run_as_finished(tiny, tmp_path, monkeypatch):
    from amdim_lib.run import train as training
    monkeypatch.setattr(training, "train", lambda *args, **kwargs: {"interrupted": "SIGTERM", "steps": 2})
    with pytest.raises(training.TrainingInterrupted, match="SIGTERM: training stopped .* at update 2 of 5") as stopped:
        training.train_until(tiny, tmp_path, 5)
    assert stopped.value.signal == "SIGTERM" and isinstance(stopped.value, KeyboardInterrupt)
    monkeypatch.setattr(training, "train", lambda *args, **kwargs: {"interrupted": None, "steps": 4})
    with pytest.raises(RuntimeError, match="after 4 of 5 updates"):
        training.train_until(tiny, tmp_path, 5)


def _one_step(config):
    torch.manual_seed(0)
    state = build_state(config.replace(probe_dropout=0.0), 10, torch.device("cpu"), 1)
    state.nce_rng = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    losses, _, _ = train_step(state, x1, x2, y, config, Runtime(torch.device("cpu")))
    encoder = state.encoder
    return losses, encoder


def test_channels_last_computes_the_same_step():
    config = get_config("shapes", "smoke", warmup_steps=0)
    nhwc_losses, nhwc = _one_step(config.replace(channels_last=True))
    nchw_losses, nchw = _one_step(config.replace(channels_last=False))
    assert next(nhwc.parameters()).is_contiguous(memory_format=torch.channels_last)
    for key in nchw_losses:
        assert abs(nhwc_losses[key].item() - nchw_losses[key].item()) < 1e-4, key
    # Gradients, not updated weights: Adam's first step moves every weight by about lr whatever the
    # gradient's size, so summation-order noise on a near-zero gradient would flip a whole update.
    # (Compared as one vector: some biases have gradients at the level of float32 summation noise.)
    a = torch.cat([p.grad.flatten() for p in nhwc.parameters()])
    b = torch.cat([p.grad.flatten() for p in nchw.parameters()])
    assert (a - b).norm() < 1e-4 * b.norm()


def test_persistent_data_workers_feed_the_same_batches(tmp_path):
    # Views are seeded per item, so a worker process yields exactly what the main process would,
    # and one loader (with persistent workers) serves every epoch.
    config = get_config("shapes", "smoke", train_size=64, test_size=32, batch_size=16, epochs=2, probe_dropout=0.0)
    train(config, tmp_path / "main", progress=False)
    train(config.replace(num_workers=1), tmp_path / "worker", progress=False)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("main", "worker"))
    assert a["step"] == b["step"] == 8
    for name, tensor in a["encoder"].items():
        assert torch.equal(tensor, b["encoder"][name]), name


def _fresh_state(config):
    torch.manual_seed(0)
    state = build_state(config, 10, torch.device("cpu"), 1)
    state.nce_rng = torch.Generator().manual_seed(2)
    return state


def test_the_objective_hands_batch_norm_its_gradient_in_the_activations_layout():
    # Batch norm's backward ran 8-10x slower (bf16 and float32) when a channels-last activation got an
    # NCHW gradient: the heads' output BN did when the views were sliced out of the batch.
    config = get_config("shapes", "smoke", warmup_steps=0, channels_last=True)
    state = _fresh_state(config)
    layouts = []

    def keep_layout(module, inputs, output):
        if output.requires_grad and output.shape[-1] > 1:
            output.register_hook(lambda g: layouts.append(g.is_contiguous(memory_format=torch.channels_last)))
    for module in state.encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(keep_layout)
    x1, x2 = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    train_step(state, x1, x2, torch.arange(8) % 10, config, Runtime(torch.device("cpu")))
    assert layouts and all(layouts), layouts


@pytest.mark.skipif(bool(os.environ.get("ATEN_CPU_CAPABILITY")),
                    reason="compile=True is refused with ATEN_CPU_CAPABILITY set, where it computed a wrong step "
                           "(test_compile_is_refused_where_it_was_measured_to_compute_a_wrong_step)")
def test_compiled_encoder_computes_the_same_step():
    config = get_config("shapes", "smoke", warmup_steps=0)
    compiled_losses, compiled = _one_step(config.replace(compile=True))
    plain_losses, plain = _one_step(config)
    for key in plain_losses:
        assert abs(compiled_losses[key].item() - plain_losses[key].item()) < 1e-4, key
    a = torch.cat([p.grad.flatten() for p in compiled.parameters()])
    b = torch.cat([p.grad.flatten() for p in plain.parameters()])
    assert (a - b).norm() < 1e-4 * b.norm()


def test_reduce_overhead_starts_each_update_as_a_new_step_of_the_graphs(monkeypatch):
    # (CUDA graphs on a GPU), so that replays never overwrite outputs still in use. What the loop adds
    # is the mark; compiling itself is checked once above, so here torch.compile hands the module back
    # (and so the refusal of a real compile under ATEN_CPU_CAPABILITY does not apply).
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    marks, mark = [], torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(mark()))
    compiled_as = []
    monkeypatch.setattr(torch, "compile", lambda module, **options: compiled_as.append(options) or module)
    _one_step(get_config("shapes", "smoke", warmup_steps=0, compile=True, compile_mode="reduce-overhead"))
    assert len(marks) == 1 and [o.get("mode") for o in compiled_as] == ["reduce-overhead"]
    _one_step(get_config("shapes", "smoke", warmup_steps=0, compile=True))
    assert len(marks) == 1, "only reduce-overhead marks the steps"


def test_bf16_autocast_computes_the_same_step_to_bf16_precision():
    config = get_config("shapes", "smoke", warmup_steps=0)
    torch.manual_seed(0)
    states = [_fresh_state(config.replace(probe_dropout=0.0)) for _ in range(2)]
    x1, x2 = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    full, _, _ = train_step(states[0], x1, x2, y, config, Runtime(torch.device("cpu")))
    half, _, _ = train_step(states[1], x1, x2, y, config, Runtime(torch.device("cpu"), torch.bfloat16))
    for key in full:
        assert half[key].dtype == torch.float32, key  # the objective itself runs in float32
        assert abs(half[key].item() - full[key].item()) < 0.02 * abs(full[key].item()) + 1e-3, key
    a, b = (torch.cat([p.grad.flatten() for p in s.encoder.parameters()]) for s in states)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99


def test_compile_is_refused_where_it_was_measured_to_compute_a_wrong_step(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    with pytest.raises(ValueError, match="ATEN_CPU_CAPABILITY"):
        _one_step(get_config("shapes", "smoke", compile=True))


def test_fused_adam_makes_the_plain_adam_update_whatever_the_gradients_layout():
    # Fused Adam pairs parameter and gradient in memory order: an NCHW gradient on a channels-last
    # weight (possible only if assigned by hand) must be re-laid out first, or the wrong weights move.
    config = get_config("shapes", "smoke", warmup_steps=0, weight_decay=1e-4)
    updates = []
    for fused in (True, False):
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)
        linear = torch.nn.Linear(3, 2)
        if fused:
            optimizer, _, _ = build_optimisation(config, conv, linear, torch.device("cpu"), 10)
            assert optimizer.defaults["fused"]
        else:
            optimizer = torch.optim.Adam([*conv.parameters(), *linear.parameters()], lr=config.lr,
                                         betas=config.betas, eps=config.eps, weight_decay=config.weight_decay,
                                         foreach=False)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in (*conv.parameters(), *linear.parameters()):
                p.grad = torch.randn(p.shape, generator=generator)  # contiguous: NCHW for the conv weight
            optimizer.step()
        assert not conv.weight.grad.is_contiguous() or not fused  # re-laid out like its weight
        updates.append(torch.cat([p.detach().flatten() for p in (*conv.parameters(), *linear.parameters())]))
    assert torch.allclose(updates[0], updates[1], rtol=1e-5, atol=1e-7)


def test_how_the_machine_runs_a_run_is_said_once_per_process(tmp_path, capsys):
    from amdim_lib.run import train as loop
    loop._ANNOUNCED.clear()
    config = get_config("shapes", "smoke", train_size=32, test_size=16, batch_size=16, epochs=1)
    train(config, tmp_path / "a", progress=False)
    train(config.replace(seed=1), tmp_path / "b", progress=False)
    assert capsys.readouterr().out.count("running on ") == 1
