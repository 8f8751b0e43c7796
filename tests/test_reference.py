"""Unit tests of amdim_lib.core.reference (the loop-based objective) against the library's objective."""

import pytest
import torch

from amdim_lib.core import reference
from amdim_lib.core.encoder import Features
from amdim_lib.core.objectives import amdim_loss, nce_loss


pytestmark = pytest.mark.usefixtures("one_thread")  # thousands of tiny ops: one thread is faster


# ----------------------------------------------------------------------------- the loop-based reference

def _features(batch=4, dim=16, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: scale * torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return Features(draw(batch, dim, 1, 1), draw(batch, dim, 5, 5), draw(batch, dim, 7, 7))


@pytest.mark.parametrize("tclip", [20.0, 5.0, None])
def test_slow_nce_loss_agrees_with_the_library(tclip):
    f = _features()
    for src, trg in ((f.r1.flatten(1), f.r5), (f.r1.flatten(1), f.r7), (f.r5[:, :, 2, 3], f.r5)):
        fast, fast_reg = nce_loss(src, trg, tclip)
        slow, slow_reg = reference.slow_nce_loss(src, trg, tclip)
        assert abs(float(fast - slow)) < 1e-5 and abs(float(fast_reg - slow_reg)) < 1e-5


def test_slow_amdim_loss_agrees_with_the_library():
    f1, f2 = _features(seed=1), _features(seed=2)
    fast = amdim_loss(f1, f2, 20.0, 0.05, generator=torch.Generator().manual_seed(7))
    slow = reference.slow_amdim_loss(f1, f2, 20.0, 0.05, generator=torch.Generator().manual_seed(7))
    assert set(fast) == set(slow) == {"1t5", "1t7", "5t5", "reg", "loss"}
    for key in fast:
        assert abs(float(fast[key] - slow[key])) < 1e-5, key
    # A different draw of 5->5 source locations changes only that task.
    other = reference.slow_amdim_loss(f1, f2, 20.0, 0.05, generator=torch.Generator().manual_seed(8))
    assert float(other["1t7"]) == float(slow["1t7"]) and float(other["5t5"]) != float(slow["5t5"])


def test_slow_nce_loss_by_hand():
    # Two images, one location each, D = 1: scores u[i, j] = s_i * t_j.
    src = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    trg = torch.tensor([[[3.0]], [[-1.0]]], dtype=torch.float64)
    loss, reg = reference.slow_nce_loss(src, trg, tclip=None)
    u = torch.tensor([[3.0, -1.0], [6.0, -2.0]], dtype=torch.float64)
    expected = -(torch.log_softmax(u[0], 0)[0] + torch.log_softmax(u[1], 0)[1]) / 2
    assert float(loss) == pytest.approx(float(expected)) and float(reg) == pytest.approx(float(u.pow(2).mean()))
