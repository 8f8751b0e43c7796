"""run.speed: the speed rules computed from outside the method, each computing what the plain code computes."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amdim_lib.bench import bench_speed_rules
from amdim_lib.core.encoder import Encoder
from amdim_lib.run import speed
from amdim_lib.run.build import build_encoder
from amdim_lib.run.presets import get_config
from amdim_lib.run.train import Runtime, build_state, train_step


def _fresh_state(config):
    torch.manual_seed(0)
    state = build_state(config, 10, torch.device("cpu"), 1)
    state.nce_rng = torch.Generator().manual_seed(2)
    return state


def _convolutions_run(monkeypatch) -> list:
    """Records (kernel, stride) of every convolution that nn.Conv2d itself computes."""
    calls = []
    real = torch.nn.Conv2d._conv_forward
    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward",
                        lambda self, x, w, b: calls.append((self.kernel_size, self.stride)) or real(self, x, w, b))
    return calls


def test_the_encoder_itself_holds_plain_convolutions_and_the_rules_swap_them_in_and_out():
    encoder = Encoder(32, ndf=8, n_rkhs=64, n_depth=2)
    assert {type(m) for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)} == {torch.nn.Conv2d}
    names = [n for n, _ in encoder.named_parameters()]
    weights = [p for p in encoder.parameters()]
    speed.use_matmul_convolutions(encoder)
    assert {type(m) for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)} == {speed.MatmulConv2d}
    assert [n for n, _ in encoder.named_parameters()] == names and all(a is b for a, b in zip(encoder.parameters(), weights))
    speed.use_matmul_convolutions(encoder, enabled=False)
    assert {type(m) for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)} == {torch.nn.Conv2d}
    config = get_config("shapes", "smoke")
    kinds = lambda e: {type(m) for m in e.modules() if isinstance(m, torch.nn.Conv2d)}  # noqa: E731
    assert kinds(build_encoder(config)) == {speed.MatmulConv2d}
    assert kinds(build_encoder(config.replace(matmul_convolutions=False))) == {torch.nn.Conv2d}


@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_the_step_with_the_speed_rules_equals_the_plain_step(monkeypatch, amp):
    # Lowered to every width here, every stride-1 unpadded kxk convolution runs as a matmul over its
    # patches, and in bf16 so does every 1x1 one; the whole step must match the plain convolutions'.
    monkeypatch.setattr(speed, "WIDE", 1)
    config = get_config("shapes", "smoke", warmup_steps=0, probe_dropout=0.0)
    x1, x2 = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    dtype = torch.bfloat16 if amp == "bf16" else None
    results = []
    for rules in (False, True):
        calls = _convolutions_run(monkeypatch)
        state = _fresh_state(config.replace(matmul_convolutions=rules))
        losses, _, _ = train_step(state, x1, x2, y, config, Runtime(torch.device("cpu"), dtype))
        results.append((losses, torch.cat([p.grad.flatten() for p in state.encoder.parameters()]), calls))
    (plain, plain_grad, plain_calls), (matmul, matmul_grad, matmul_calls) = results
    assert plain_calls.count(((3, 3), (1, 1))) >= 3 and ((3, 3), (1, 1)) not in matmul_calls
    assert (((1, 1), (1, 1)) in matmul_calls) == (amp == "off")
    tolerance = 0.01 if amp == "bf16" else 1e-4
    for key in plain:
        assert abs(matmul[key].item() - plain[key].item()) < tolerance * abs(plain[key].item()) + 1e-3, key
    assert torch.nn.functional.cosine_similarity(plain_grad, matmul_grad, dim=0) > (0.999 if amp == "bf16" else 0.99999)
    # Outside bf16 autocast the 1x1 convolutions stay convolutions.
    x = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last)
    assert not speed._wide_bf16_cpu(torch.nn.Conv2d(8, 8, 1), x)


def _conv_and_grads(conv, x):
    out = conv(x)
    (out * torch.arange(1.0, conv.out_channels + 1).view(1, -1, 1, 1)).sum().backward()
    grads = [x.grad.clone(), conv.weight.grad.clone()] + ([conv.bias.grad.clone()] if conv.bias is not None else [])
    x.grad = conv.weight.grad = None
    if conv.bias is not None:
        conv.bias.grad = None
    return out, grads


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel,size,bias", [(3, 3, False), (1, 1, False), (3, 3, True), (3, 5, True), (3, 7, False),
                                              (2, 6, False)])
def test_a_convolution_as_a_matmul_over_its_patches_is_the_same(kernel, size, bias, channels_last, monkeypatch):
    # A kernel covering its map always goes this way; on the CPU so does a kxk convolution of >= WIDE
    # channels (lowered to these 6 here).
    monkeypatch.setattr(speed, "WIDE", 6)
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    conv = torch.nn.Conv2d(6, 10, kernel, bias=bias).to(memory_format=layout)
    x = torch.randn(4, 6, size, size).contiguous(memory_format=layout).requires_grad_()
    plain, plain_grads = _conv_and_grads(conv, x)
    speed.use_matmul_convolutions(conv)
    calls = _convolutions_run(monkeypatch)
    fast, fast_grads = _conv_and_grads(conv, x)
    assert not calls, "this convolution should be computed as a matmul"
    assert fast.shape == plain.shape == (4, 10, size - kernel + 1, size - kernel + 1)
    torch.testing.assert_close(fast, plain)
    torch.testing.assert_close(fast_grads, plain_grads)
    strided = speed.use_matmul_convolutions(torch.nn.Conv2d(6, 10, kernel, stride=2))
    strided(torch.randn(4, 6, size + 2, size + 2))  # strided: the convolution itself
    monkeypatch.setattr(speed, "WIDE", 7)
    conv(torch.randn(4, 6, size + 2, size + 2))  # narrower than WIDE: the convolution itself
    assert len(calls) == 2


def test_a_grouped_convolution_covering_its_map_stays_a_convolution():
    conv = torch.nn.Conv2d(6, 10, 3, groups=2)
    x = torch.randn(4, 6, 3, 3)
    expected = conv(x)
    torch.testing.assert_close(speed.use_matmul_convolutions(conv)(x), expected)


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_every_encoder_computes_the_same_features_with_its_convolutions_as_patch_matmuls(image_size, monkeypatch):
    # At paper size the 3x3 units on the 7x7 and 5x5 maps go through patch matmuls on the CPU; lowering
    # WIDE sends this small encoder's there too (its strided and padded convolutions stay convolutions).
    torch.manual_seed(0)
    encoder = Encoder(image_size, ndf=8, n_rkhs=64, n_depth=2).to(memory_format=torch.channels_last)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(3, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    plain = encoder(x)
    monkeypatch.setattr(speed, "WIDE", 1)
    fast = speed.use_matmul_convolutions(encoder)(x)
    for name in ("r1", "r5", "r7"):
        torch.testing.assert_close(getattr(fast, name), getattr(plain, name), rtol=1e-4, atol=1e-5)


def test_amp_auto_chooses_bf16_only_on_cpus_that_run_it_fast(monkeypatch):
    cpu = torch.device("cpu")
    config = get_config("shapes", "smoke")
    monkeypatch.setattr(speed, "cpu_bf16_speedup", lambda: 3.2)  # e.g. AMX
    assert speed.autocast_dtype("auto", cpu) == torch.bfloat16
    assert "amp=auto: a bf16 convolution ran 3.2x" in speed.execution_summary(config, cpu, torch.bfloat16)
    monkeypatch.setattr(speed, "cpu_bf16_speedup", lambda: 0.6)  # native, but slower than float32
    assert speed.autocast_dtype("auto", cpu) is None
    assert "ran 0.6x float32's speed" in speed.execution_summary(config, cpu, None)
    assert speed.autocast_dtype("bf16", cpu) == torch.bfloat16  # asked for: given, and the log says what it costs
    assert "amp=auto would choose float32" in speed.execution_summary(config.replace(amp="bf16"), cpu, torch.bfloat16)
    monkeypatch.setattr(speed, "cpu_bf16_speedup", lambda: 0.0)  # not native
    assert speed.autocast_dtype("auto", cpu) is None and speed.autocast_dtype("off", cpu) is None
    assert "no native bf16" in speed.execution_summary(config, cpu, None)
    assert "emulated" in speed.execution_summary(config.replace(amp="bf16"), cpu, torch.bfloat16)


def test_the_bf16_probe_times_both_precisions_only_where_bf16_is_native(monkeypatch):
    speed.cpu_bf16_speedup.cache_clear()
    try:
        monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
        assert speed.cpu_bf16_speedup() == 0.0
        speed.cpu_bf16_speedup.cache_clear()
        monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
        timed = []
        real = torch.nn.functional.conv2d
        monkeypatch.setattr(torch.nn.functional, "conv2d", lambda *a, **k: timed.append(torch.is_autocast_enabled("cpu"))
                            or real(*a, **k))
        with torch.inference_mode():  # its first caller may be evaluating
            speedup = speed.cpu_bf16_speedup()
        assert speedup > 0 and math.isfinite(speedup)
        assert timed.count(False) == timed.count(True) == 4  # a warm-up and 3 timed runs each
    finally:
        speed.cpu_bf16_speedup.cache_clear()


MAPPED_BYTES = """
import ctypes, torch
from amdim_lib.run import speed
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
def mapped_by_a_new_tensor():
    before = libc.mallinfo2().hblkhd
    t = torch.empty(64 << 20, dtype=torch.uint8)
    return libc.mallinfo2().hblkhd - before
plain = mapped_by_a_new_tensor()
print(plain, speed.keep_freed_memory(), mapped_by_a_new_tensor())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings exist on Linux only")
def test_training_keeps_freed_memory_instead_of_mapping_large_tensors_afresh(monkeypatch):
    # By default glibc maps every block above 32 MiB anew (and faults its pages in on every step).
    def run(**env):
        done = subprocess.run([sys.executable, "-c", MAPPED_BYTES], capture_output=True, text=True, timeout=120,
                              env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env,
                                   "PYTHONPATH": str(Path(__file__).parents[1])})
        assert done.returncode == 0, done.stderr[-2000:]
        plain, kept, after = done.stdout.split()
        return int(plain), kept == "True", int(after)
    plain, kept, after = run()
    assert plain >= 64 << 20 and kept and after == 0
    plain, kept, after = run(MALLOC_MMAP_THRESHOLD_="1000000")  # the user's own setting wins
    assert not kept and after >= 64 << 20
    monkeypatch.setattr(speed, "_freed_memory_kept", True)
    summary = speed.execution_summary(get_config("shapes", "smoke"), torch.device("cpu"), None)
    assert "freed memory kept" in summary




def test_bench_times_the_step_with_and_without_the_speed_rules():
    result = bench_speed_rules(get_config("shapes", "smoke", batch_size=8), steps=1, rounds=2, warmup=1)
    assert result["seconds_per_step_with_rules"] > 0 and result["seconds_per_step_plain"] > 0
    assert result["ratio"] == result["seconds_per_step_plain"] / result["seconds_per_step_with_rules"]
