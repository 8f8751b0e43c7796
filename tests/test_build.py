"""What runs are built from (amdim_lib.run.build): the views and test transform of each data set."""


import pytest
import torch
from PIL import Image

from amdim_lib.run.build import eval_transform_for, two_views
from amdim_lib.run.presets import get_config

# The official code's input statistics (mean, std per channel).
OFFICIAL = {
    "cifar10": ([125.3 / 255, 123.0 / 255, 113.9 / 255], [63.0 / 255, 62.1 / 255, 66.7 / 255]),
    "cifar100": ([125.3 / 255, 123.0 / 255, 113.9 / 255], [63.0 / 255, 62.1 / 255, 66.7 / 255]),
    "stl10": ([0.43, 0.42, 0.39], [0.27, 0.26, 0.27]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "places205": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "shapes": ([0.5] * 3, [0.5] * 3),
    "folder": ([0.5] * 3, [0.5] * 3),
}


def _views(config, image):
    """Both training views of one image, through the configured view path."""
    views = two_views(config)
    if config.batch_views:
        source, uniforms = views.item(image, 0)
        x1, x2 = views.finish(source[None], uniforms[None])
        return x1[0], x2[0]
    return views.item(image, 0)


@pytest.mark.parametrize("dataset", sorted(OFFICIAL))
@pytest.mark.parametrize("batch_views", [True, False])
def test_training_and_test_inputs_use_the_data_sets_normalisation(dataset, batch_views):
    config = get_config(dataset, "smoke", augment="none", batch_views=batch_views)
    assert config.normalisation() == tuple(tuple(v) for v in OFFICIAL[dataset])
    grey = Image.new("RGB", (config.image_size + 40,) * 2, (200, 100, 50))  # larger than any crop: fits every policy
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in OFFICIAL[dataset])
    expected = (torch.tensor([200, 100, 50]).view(3, 1, 1) / 255 - mean) / std
    for x in (*_views(config, grey), eval_transform_for(config)(grey)):
        assert x.shape == (3, config.image_size, config.image_size)
        assert torch.allclose(x, expected.expand_as(x), atol=1e-4), f"{dataset}: inputs normalised with other statistics"


def test_a_loader_worker_ignores_ctrl_c_and_leaves_quietly_on_sigterm():
    # Python's exit terminates leftover workers with SIGTERM and waits for them: a worker that ignored it would
    # hang the exit. A quiet exit (status 0) is what the trainer's loader accepts when a group signal takes it.
    import os
    import signal
    import time

    from amdim_lib.run.build import make_loader
    config = get_config("shapes", "smoke", num_workers=1)
    loader = make_loader(torch.utils.data.TensorDataset(torch.arange(8.0)), config, torch.device("cpu"), batch_size=2)
    batches = iter(loader)
    next(batches)
    (worker,) = batches._workers
    os.kill(worker.pid, signal.SIGINT)
    time.sleep(0.5)
    assert worker.is_alive(), "Ctrl-C reaches the whole group; the trainer decides, not the worker"
    worker.terminate()
    worker.join(timeout=10)
    assert worker.exitcode == 0, worker.exitcode
    del batches
