"""Unit tests of amdim_lib.analysis.timing."""

import pytest
import torch

from amdim_lib.analysis import timing


pytestmark = pytest.mark.usefixtures("one_thread")  # thousands of tiny ops: one thread is faster


def test_time_call_restores_the_thread_count():
    torch.set_num_threads(2)
    before = torch.get_num_threads()
    seen = []
    result, seconds = timing.time_call(lambda: seen.append(torch.get_num_threads()) or 42, repeats=3)
    assert result == 42 and seen == [1, 1, 1] and seconds >= 0
    assert torch.get_num_threads() == before
