"""Configurations are checked before any work: values that would compute nonsense, devices this machine
lacks, sizes that cannot fit its memory, the benchmark's counts, and the notebooks' parameters."""

import time

import pytest
import torch

import amdim_lib.run.memory as memory
from amdim_lib.__main__ import main
from cli_exit import exit_message
from amdim_lib.run.build import build_encoder
from amdim_lib.run.memory import check_fits, estimate_training_memory
from amdim_lib.core.mixture import MixtureHead
from amdim_lib.run.presets import Config, check_notebook_parameters, get_config
from amdim_lib.run.probes import Probes
from amdim_lib.run.train import Runtime, build_state, train_step

SMOKE = ["--preset", "smoke", "--no-progress"]


# ----------------------------------------------------------------------------- memory

@pytest.mark.parametrize("changes", [dict(), dict(n_depth=3, use_bn=True), dict(mixture_k=3, mixture_hidden=16),
                                     dict(image_size=64, n_rkhs=64, tasks=("1t5", "5t5"))])
def test_the_memory_estimate_counts_the_real_parameters_and_saved_activations(changes):
    """The estimate extrapolates from depths 1 and 2: at depth 3 it must still equal what the real
    modules hold and what one real forward pass saves for backward."""
    config = get_config("shapes", "smoke", batch_size=4, channels_last=False, **changes)
    estimate = estimate_training_memory(config, n_classes=10)
    torch.manual_seed(0)
    state = build_state(config, 10, torch.device("cpu"), 1)
    assert estimate.parameters == sum(p.numel() for p in state.model.parameters())
    saved, weights = {}, {id(p) for p in state.model.parameters()}

    def pack(t):
        if id(t) not in weights:
            saved[id(t)] = t.numel() * t.element_size()
        return t
    x = torch.rand(4, 3, config.image_size, config.image_size)
    state.model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses, probe_losses, _ = train_step(state, x, x.flip(3), torch.zeros(4, dtype=torch.long), config,
                                             Runtime(torch.device("cpu")))
    # The real step also runs the probes (a few small tensors) on top of what the estimate counts.
    assert estimate.activation_bytes <= sum(saved.values()) <= 1.1 * estimate.activation_bytes


@pytest.mark.parametrize("sets", [["ndf=100000", "n_rkhs=400000"], ["mixture_k=1000000"], ["n_depth=100000"]])
def test_sizes_that_cannot_fit_are_refused_at_once_with_the_estimate(tmp_path, sets):
    start = time.time()
    message = exit_message(["train", *SMOKE, *[a for s in sets for a in ("--set", s)], "--device", "cpu",
                             "--out", str(tmp_path / "run")])
    assert time.time() - start < 20
    assert "training this configuration needs at least" in message and "GiB" in message and "parameters" in message
    assert "lower batch_size, ndf, n_rkhs, n_depth or mixture_k" in message and "\n" not in message
    assert not (tmp_path / "run").exists()
    message = exit_message(["bench", *SMOKE[:2], *[a for s in sets for a in ("--set", s)], "--device", "cpu"])
    assert "needs at least" in message


def test_the_limit_is_the_devices_memory(monkeypatch):
    demo = get_config("shapes", "demo")
    needed = estimate_training_memory(demo).total_bytes
    monkeypatch.setattr(memory, "device_memory", lambda device: needed - 1)
    with pytest.raises(ValueError, match=r"more than the .* GiB of cpu"):
        check_fits(demo, torch.device("cpu"))
    monkeypatch.setattr(memory, "device_memory", lambda device: needed)
    assert check_fits(demo, torch.device("cpu")).total_bytes == needed


def test_data_loader_workers_are_counted_on_the_host(monkeypatch):
    demo = get_config("shapes", "demo")
    alone = estimate_training_memory(demo)
    assert alone.workers == 0 and alone.worker_bytes == 0 and "workers" not in alone.text()
    monkeypatch.setattr(memory, "usable_cpus", lambda: 2)
    many = estimate_training_memory(demo.replace(num_workers=5000))  # bounded as make_loader bounds them
    assert many.workers == 2 and many.worker_bytes >= 2 * memory.WORKER_BYTES
    assert "2 data-loader workers: " in many.text() and "(on the host)" in many.text("cuda")
    assert f"at least {(many.total_bytes + many.worker_bytes) / memory.GIB:.2f} GiB" in many.text()  # the CPU's whole need
    # On the CPU the workers share the device's memory with the step.
    monkeypatch.setattr(memory, "device_memory", lambda device: many.total_bytes + many.worker_bytes - 1)
    with pytest.raises(ValueError, match=r"more than the .* GiB of cpu: lower .*, or num_workers$"):
        check_fits(demo.replace(num_workers=2), torch.device("cpu"))
    # On a GPU they live on the host: a host too small for them is named, with the fix.
    sizes = {"cuda": 80 * memory.GIB, "cpu": memory.WORKER_BYTES}
    monkeypatch.setattr(memory, "device_memory", lambda device: sizes[device.type])
    with pytest.raises(ValueError, match=r"^2 data-loader workers need .* GiB, more than the host's .*: lower num_workers$"):
        check_fits(demo.replace(num_workers=2), torch.device("cuda"))
    assert check_fits(demo, torch.device("cuda")).workers == 0


def test_the_estimate_needs_no_memory_for_huge_modules():
    config = get_config("shapes", "smoke", mixture_k=1_000_000)  # 4 billion parameters: 62 GiB to train
    start = time.time()
    estimate = estimate_training_memory(config)
    assert time.time() - start < 5
    with torch.device("meta"):  # (counted here without memory too)
        modules = (build_encoder(config), MixtureHead(config.n_rkhs, config.mixture_k), Probes(config.n_rkhs, 10))
    assert estimate.parameters == sum(p.numel() for m in modules for p in m.parameters()) > 4e9


# ----------------------------------------------------------------------------- devices

@pytest.mark.parametrize("device", ["tpu", "cuda:abc", "gpu", "cuda:"])
def test_an_unknown_device_is_a_configuration_error(device, tmp_path):
    message = exit_message(["train", *SMOKE, "--device", device, "--out", str(tmp_path / "run")])
    assert message == (f"error: invalid configuration: device={device!r}; choose auto, cpu, cuda, cuda:N "
                       "(N: a GPU index) or mps")


@pytest.mark.parametrize("device,name", [("cuda", "CUDA"), ("cuda:1", "CUDA"), ("mps", "MPS")])
@pytest.mark.parametrize("command", ["train", "bench", "sweep"])
def test_a_device_this_machine_lacks_is_named(monkeypatch, tmp_path, device, name, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    message = exit_message([command, *SMOKE[:2], "--device", device]
                            + (["--out", str(tmp_path / "run")] if command != "bench" else []))
    assert f"device {device!r} requested but {name} is not available" in message and "\n" not in message
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- values and counts

@pytest.mark.parametrize("setting,expected", [
    ("gamma=-1", "gamma=-1; the factor of the learning rate at each milestone, in (0, 1]"),
    ("gamma=0", "gamma=0;"),
    ("tasks=1t7,1t7", "names a task twice"),
    ("tasks=1t5,5t5,1t5", "names a task twice"),
    ("lr=1e999", "lr=inf; must be a finite number"),
    ("weight_decay=-1e-5", "weight_decay=-1e-05"),
    ("probe_dropout=1.0", "probe_dropout=1.0; a probability"),
    ("seed=-1", "seed=-1; an integer in [0, 2**32)"),
    ("compile_mode=cudagraphs", "compile_mode='cudagraphs'; choose default, reduce-overhead, max-autotune"),
    ("compile_mode=reduce-overhead", "compile_mode='reduce-overhead' does nothing without compile=True"),
])
def test_values_that_would_compute_nonsense_are_refused(setting, expected):
    message = exit_message(["train", "--preset", "smoke", "--set", setting, "--print-config"])
    assert message.startswith("error: invalid configuration: ") and expected in message


@pytest.mark.parametrize("setting,expected,longest", [
    ("betas=((1,2),3)", "--set betas takes a flat tuple such as (0.8, 0.999), got '((1,2),3)'", 200),
    ("data_dir=" + "x" * 100_000, "--set data_dir=... is 100,000 characters long; no setting takes more than 4096", 200),
    ("no_such_key=" + "y" * 100_000, "(got 'no_such_key=yyyy", 1200),
])
def test_odd_values_get_a_short_message_naming_the_type_expected(setting, expected, longest):
    message = exit_message(["train", "--preset", "smoke", "--set", setting, "--print-config"])
    assert expected in message and len(message) < longest


def test_a_configuration_that_is_not_a_dict_is_named_as_such():
    with pytest.raises(ValueError, match="a configuration is a dict of settings .*got a str: 'hello'"):
        Config.from_dict("hello")


@pytest.mark.parametrize("argv,expected", [
    (["--batch-size", "0"], "error: invalid configuration: batch_size=0; NCE needs other images"),
    (["--batch-size", "1"], "error: invalid configuration: batch_size=1; NCE needs other images"),
])
def test_bench_checks_its_batch_size(argv, expected):
    assert exit_message(["bench", "--preset", "smoke", *argv]).startswith(expected)


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--steps", "-2"], ["--data-steps", "0"], ["--steps", "x"]])
def test_bench_checks_its_counts(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "--preset", "smoke", *argv])
    assert stopped.value.code == 2
    assert f"argument {argv[0]}: '{argv[1]}' is not a whole number >= 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- notebook parameters

@pytest.mark.parametrize("name,value,cli", [("seed", "abc", "seed=abc"), ("device", "tpu", "device=tpu"),
                                            ("gamma", -1, "gamma=-1"), ("batch_size", 1, "batch_size=1")])
def test_notebook_parameters_get_the_command_lines_messages(name, value, cli):
    with pytest.raises(ValueError) as raised:
        check_notebook_parameters(preset="smoke", **{name: value})
    assert f"error: {raised.value}" == exit_message(["train", "--preset", "smoke", "--set", cli, "--print-config"])


@pytest.mark.parametrize("parameters,expected", [
    (dict(resume="yes"), "invalid notebook parameter: resume='yes'; True or False"),
    (dict(k=-1), "mixture_k=-1; 0 (off) or a number of components"),
    (dict(seeds=[0, "1"]), "invalid notebook parameter: seeds=[0, '1']"),
    (dict(steps=0), "invalid notebook parameter: steps=0; None or a number of updates >= 1"),
    (dict(output_dir=None), "invalid notebook parameter: output_dir=None; a folder path"),
    (dict(preset="huge"), "unknown preset 'huge'"),
    (dict(sead=1), "unknown notebook parameter 'sead'"),
])
def test_notebook_parameters_are_named_when_wrong(parameters, expected):
    with pytest.raises(ValueError, match=None) as raised:
        check_notebook_parameters(**parameters)
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_the_notebooks_defaults_pass():
    check_notebook_parameters(dataset="shapes", preset="demo", data_dir=None, output_dir="../runs/lab/04_training",
                              device="auto", seed=0, resume=True)
    check_notebook_parameters(preset="demo", output_dir="x", seed=0, k=4, tau=1.0, alpha=0.1, cifar_dir=None,
                              retrain=False, threads=None)
    check_notebook_parameters(dataset="shapes", preset="smoke", data_dir=None, cifar_dir=None, output_dir="x",
                              device="cpu", seed=0, seeds=None, variants=None, steps=None, train_dir="y")
