import os

import pytest
import torch

# One thread per test process: the suite also runs notebook kernels and training subprocesses, and
# OpenMP threads that spin on a shared 2-core machine slow small operations down by orders of magnitude.
torch.set_num_threads(1)
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # inherited by subprocesses and notebook kernels


@pytest.fixture
def smoke_config():
    from amdim_lib.run.presets import get_config
    return get_config("shapes", "smoke")


@pytest.fixture
def one_thread():
    """For modules of thousands of tiny ops (`pytestmark = pytest.mark.usefixtures("one_thread")`): one intra-op
    thread, even where a test raised the count, and the count restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
