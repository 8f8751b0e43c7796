import os

import pytest
import torch

# Two cores here: keep torch from oversubscribing them when tests run data-loader workers.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def smoke_config():
    from amdim_lib.presets import get_config
    return get_config("shapes", "smoke")
