"""The speed switches change how training runs, never what it computes."""

import collections
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amdim_lib import bench
from amdim_lib.__main__ import main
from amdim_lib.bench import PHASES, _phased_step, bench_against_official, bench_end_to_end, profile_step
from amdim_lib.run.checkpoints import load_checkpoint
from amdim_lib.run.presets import get_config
from amdim_lib.run.train import Runtime, build_optimisation, build_state, train, train_step

from cli_exit import exit_message


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


def test_end_to_end_benchmark_reads_the_real_pipeline():
    result = bench_end_to_end(get_config("shapes", "smoke", train_size=32 * 2), steps=2, warmup=1, epochs=2)
    assert result["num_workers"] == 0 and result["batch_views"]
    for part in ("first_epoch", "later_epochs"):
        assert result[part]["seconds_per_step"] > 0 and result[part]["synthetic_seconds_per_step"] > 0


def test_the_data_benchmark_times_its_second_epoch_over_images_already_read(monkeypatch):
    """Its 'later epoch' figure is what every epoch after the first costs: the first must read the
    whole split (even the batches it does not time), or the second renders images afresh."""
    reads = collections.Counter()
    build_data = bench.build_data

    def counting(config):
        pairs, *rest = build_data(config)
        base = pairs.base

        class Counted(torch.utils.data.Dataset):
            def __len__(self):
                return len(base)

            def __getitem__(self, index):
                reads[index] += 1
                return base[index]
        pairs.base = Counted()
        return (pairs, *rest)
    monkeypatch.setattr(bench, "build_data", counting)
    bench.bench_data(get_config("shapes", "smoke", train_size=8 * 4, batch_size=8), batches=2)
    assert sorted(reads) == list(range(32)) and set(reads.values()) == {1}


def test_torchrun_with_one_process_takes_the_ddp_path(tmp_path):
    script = tmp_path / "context.py"
    script.write_text("from amdim_lib.run import distributed\nc = distributed.setup('cpu')\nprint(c.enabled, c.world_size)\n")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                          str(script)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})  # (also uninstalled)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["True", "1"]


def _fresh_state(config):
    torch.manual_seed(0)
    state = build_state(config, 10, torch.device("cpu"), 1)
    state.nce_rng = torch.Generator().manual_seed(2)
    return state


def test_profiled_phases_make_up_the_plain_step():
    # The profile cuts the step where `train_step` does not (the backward at the features); it must
    # still compute the same losses and gradients, or its shares describe another step.
    config = get_config("shapes", "smoke", warmup_steps=0, probe_dropout=0.0)
    x1, x2 = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    plain_state, phased_state = _fresh_state(config), _fresh_state(config)
    plain, _, _ = train_step(plain_state, x1, x2, y, config, Runtime(torch.device("cpu")))
    seen = []
    phased = _phased_step(phased_state, x1, x2, y, config, Runtime(torch.device("cpu")),
                          lambda phase, work: seen.append(phase) or work())
    assert set(seen) == set(PHASES) - {"views"}
    for key in plain:
        assert torch.allclose(plain[key], phased[key], atol=1e-6), key
    for module in ("encoder", "probes"):
        a = torch.cat([p.grad.flatten() for p in getattr(plain_state, module).parameters()])
        b = torch.cat([p.grad.flatten() for p in getattr(phased_state, module).parameters()])
        assert (a - b).norm() <= 1e-5 * a.norm(), module


def test_profile_reports_every_phase():
    profile = profile_step(get_config("shapes", "smoke"), steps=1, warmup=1, view_batches=2)
    assert list(profile["phases"]) == list(PHASES)
    assert all(seconds > 0 for seconds in profile["phases"].values())
    assert profile["seconds_per_step"] > 0 and profile["phased_seconds_per_step"] > 0
    with pytest.raises(ValueError, match="mixture_k"):
        profile_step(get_config("shapes", "smoke", mixture_k=2), steps=1, warmup=0)


# A stand-in for the official code with its interface (Model(...), info_modules, class_modules,
# forward(x1, x2, class_only) -> {g2l_*, lgt_reg, class}, costs.loss_xent): the real one is never shipped.
FAKE_OFFICIAL = {
    "model.py": '''
import torch
from torch import nn

class Model(nn.Module):
    def __init__(self, ndf, n_classes, n_rkhs, tclip=20., n_depth=3, encoder_size=32, use_bn=False):
        super().__init__()
        self.encoder = nn.Conv2d(3, n_rkhs, encoder_size)
        self.evaluator = nn.Linear(n_rkhs, n_classes)
        self.info_modules, self.class_modules = [self.encoder], [self.evaluator]

    def forward(self, x1, x2, class_only=False):
        r1 = self.encoder(torch.cat([x1, x2])).flatten(1)
        logits = self.evaluator(r1.detach())
        zero = 0 * r1.sum()
        return {"g2l_1t5": r1.square().mean(), "g2l_1t7": zero, "g2l_5t5": zero, "lgt_reg": zero,
                "class": [logits, logits]}
''',
    "costs.py": "import torch.nn.functional as F\n\ndef loss_xent(logits, labels):\n    return F.cross_entropy(logits, labels)\n",
}


def test_official_step_is_timed_against_ours(tmp_path, capsys):
    for name, text in FAKE_OFFICIAL.items():
        (tmp_path / name).write_text(text)
    compared = bench_against_official(get_config("shapes", "smoke"), tmp_path, rounds=2, steps=1, warmup=1)
    assert len(compared["seconds_per_step"]) == len(compared["official_seconds_per_step"]) == 2
    assert compared["speedup"] > 0
    assert "model" not in sys.modules  # the official module names are not left behind
    out = tmp_path / "bench.json"
    main(["bench", "--preset", "smoke", "--batch-size", "8", "--steps", "2", "--no-data",
          "--compare-official", str(tmp_path), "--json", str(out)])
    assert "the official step rate" in capsys.readouterr().out
    # The share of the peak is reported at the comparison's median too, the s/step printed beside the ratio.
    result = json.loads(out.read_text())
    median = statistics.median(result["official"]["seconds_per_step"])
    assert result["official"]["fraction_of_peak"] == pytest.approx(
        result["gflop_per_step"] / median / result["matmul_peak_gflops"])
    message = exit_message(["bench", "--preset", "smoke", "--no-data", "--no-flops", "--compare-official",
                            str(tmp_path / "nowhere")])
    assert "model.py" in message and "amdim-public" in message


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
    # is the mark; compiling itself is checked once above, so here torch.compile hands the module back.
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


def test_the_machine_line_names_the_isa_its_limits_and_the_bf16_hardware(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    line = bench.machine_summary(torch.device("cpu"))
    assert "kernels, bf16 hardware: AMX (ONEDNN_MAX_CPU_ISA=AVX2)" in line and "threads, PyTorch" in line
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert "bf16 hardware: none" in bench.machine_summary(torch.device("cpu"))


def test_the_cpu_name_carries_family_and_model_which_tell_generations_apart(tmp_path):
    cpu = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
    (tmp_path / "two").write_text(cpu + "\n" + cpu.replace("25", "26") + "\n")
    assert bench._cpu_name(tmp_path / "two") == "AMD EPYC (family 25, model 17)"  # the first CPU's
    (tmp_path / "bare").write_text("processor\t: 0\n")
    assert bench._cpu_name(tmp_path / "bare") and "family" not in bench._cpu_name(tmp_path / "bare")
    assert bench._cpu_name(tmp_path / "missing")
