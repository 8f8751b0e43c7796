"""Unit tests of amdim_lib.bench: the end-to-end and data benchmarks, the profiled step, the comparison with
the official step, and the machine line."""

import collections
import json
import statistics
import sys

import pytest
import torch

from amdim_lib import bench
from amdim_lib.__main__ import main
from amdim_lib.bench import PHASES, _phased_step, bench_against_official, bench_end_to_end, profile_step
from amdim_lib.run.presets import get_config
from amdim_lib.run.train import Runtime, build_state, train_step

from cli_exit import exit_message


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


def test_the_machine_line_names_the_isa_its_limits_and_the_bf16_hardware(monkeypatch):
    for name in bench.ISA_LIMITS:  # (the suite may itself run with the ISA capped)
        monkeypatch.delenv(name, raising=False)
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
