"""run.events: every training run's TensorBoard events, read back with TensorBoard's own reader."""

import math
import warnings

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

import amdim_lib.run.train as train_module
from amdim_lib.run.presets import get_config
from amdim_lib.run.runfolder import RunFolder, read_metrics
from amdim_lib.run.supervised import train_supervised
from amdim_lib.run.train import train

TINY = dict(train_size=64, test_size=32, batch_size=16, epochs=2, log_every=1)


def events_of(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder / RunFolder.TENSORBOARD), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def scalar_steps(events: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in events.Scalars(tag)]


def test_events_hold_the_same_scalars_at_the_same_steps_as_metrics_jsonl(tmp_path):
    train(get_config("shapes", "smoke", **TINY), tmp_path)
    events = events_of(tmp_path)
    tags = set(events.Tags()["scalars"])
    records = [r for r in read_metrics(tmp_path) if r["kind"] in ("train", "eval")]
    assert {"train/1t5", "train/1t7", "train/5t5", "train/reg", "train/loss", "train/lr", "train/images_per_s",
            "train/probe_linear_loss", "train/probe_mlp_acc", "eval/test_linear_acc"} <= tags
    checked = 0
    for record in records:
        for key, value in record.items():
            if key in ("kind", "step") or not isinstance(value, (int, float)):
                continue
            found = {e.step: e.value for e in events.Scalars(f"{record['kind']}/{key}")}
            assert math.isclose(found[record["step"]], value, rel_tol=1e-6, abs_tol=1e-6), (key, record["step"])
            checked += 1
    assert checked > 50
    for tag in tags:  # nothing but what metrics.jsonl holds
        kind, key = tag.split("/", 1)
        assert scalar_steps(events, tag) == [r["step"] for r in records if r["kind"] == kind and key in r]
    assert events.Tags()["images"] == ["views/pairs (view 1, view 2)"]
    assert "config/text_summary" in events.Tags()["tensors"]


def test_a_crashed_run_resumed_has_each_step_once_and_overwrite_removes_its_events(tmp_path, monkeypatch):
    config = get_config("shapes", "smoke", **TINY, checkpoint_every=4)
    real, calls = train_module.train_step, {"n": 0}

    def crash_at_the_seventh(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("the machine went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", crash_at_the_seventh)
    with pytest.raises(RuntimeError):
        train(config, tmp_path)
    assert scalar_steps(events_of(tmp_path), "train/loss") == [1, 2, 3, 4, 5, 6], "steps 5, 6 outlive the checkpoint"
    monkeypatch.setattr(train_module, "train_step", real)
    train(config, tmp_path, resume=True)
    steps = scalar_steps(events_of(tmp_path), "train/loss")
    assert steps == [r["step"] for r in read_metrics(tmp_path) if r["kind"] == "train"] == list(range(1, 9))
    stale = tmp_path / RunFolder.TENSORBOARD / "stale.txt"
    stale.write_text("from the old run")
    train(config.replace(lr=1e-4), tmp_path, overwrite=True)
    assert not stale.exists() and scalar_steps(events_of(tmp_path), "train/loss") == list(range(1, 9))


def test_a_failed_event_write_is_reported_once_and_the_run_goes_on(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(get_config("shapes", "smoke", **TINY), tmp_path)
    reported = [w for w in caught if "TensorBoard events" in str(w.message)]
    assert len(reported) == 1 and "No space left on device" in str(reported[0].message)
    assert summary["finished"] and [r["step"] for r in read_metrics(tmp_path) if r["kind"] == "train"] == list(range(1, 9))


def test_the_supervised_baseline_writes_its_curve_too(tmp_path):
    _, summary = train_supervised(get_config("shapes", "smoke", **TINY), steps=5, out_dir=tmp_path)
    events = events_of(tmp_path)
    assert scalar_steps(events, "supervised/loss") == [1, 2, 3, 4, 5]
    assert [e.value for e in events.Scalars("supervised/test_acc")] == pytest.approx([summary["test_acc"]])
    assert torch.tensor([h[1] for h in summary["history"]]).allclose(
        torch.tensor([e.value for e in events.Scalars("supervised/loss")]))
