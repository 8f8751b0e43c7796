"""The supervised baseline: the same encoder trained on labels instead of on the AMDIM objective.

Everything except the loss matches the self-supervised run of `amdim_lib.run.train`: the same
architecture (`build_encoder`), the same two-view data with the same augmentation (`build_data`),
the same optimiser and learning-rate schedule (`build_optimisation`), the same device and mixed
precision rules. Each step feeds both views of the batch (2 x batch images, as an AMDIM step
does) through the encoder and a linear head on the global feature r1, and minimises cross-entropy:

    loss = CE(W r1(view1) + b, y) / 2 + CE(W r1(view2) + b, y) / 2

The budget is counted in updates and means what it means for every run (`build.budget_config`):
`steps=None` is the self-supervised run's own schedule (its epochs of `steps_per_epoch` updates, its
warm-up and milestones); a budget of `steps` updates is a warm-up of a tenth of it (at most the
configured one), then a constant learning rate without step decay, as each AMDIM arm of a sweep gets.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .build import (autocast, budget_config, build_data, build_encoder, build_optimisation, select_device,
                    steps_per_epoch)
from .checkpoints import load_checkpoint, save_checkpoint, save_json
from ..core.encoder import Encoder, views_in_batch
from .speed import autocast_dtype
from .presets import Config
from .events import EventLog
from .runfolder import RunFolder, reuse_finished_run
from .train import epoch_loader



@torch.no_grad()
def head_accuracy(encoder: Encoder, head: nn.Module, dataset, device, dtype=None, batch_size: int = 256) -> float:
    """Test accuracy of the encoder with its own linear head (the supervised network end to end)."""
    encoder.eval(), head.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with autocast(device, dtype):
            h = encoder(x).r1.flatten(1)
        correct += (head(h.float()).argmax(1) == y).sum().item()
        total += len(y)
    return correct / max(total, 1)


def _update(encoder, head, x1, x2, y, optimisation, config: Config, dtype, step: int) -> tuple[float, float]:
    """One supervised update on both views; returns its loss and training accuracy."""
    optimizer, scheduler, scaler = optimisation
    x, y = torch.cat([x1, x2]), torch.cat([y, y])
    with autocast(x.device, dtype), views_in_batch(encoder, 2 if config.bn_per_view else 1):
        h = encoder(x).r1.flatten(1)  # both views in one pass, with batch norm as in the AMDIM step
    logits = head(h.float())
    loss = F.cross_entropy(logits, y)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite supervised loss at step {step + 1}; lower lr")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.item(), (logits.argmax(1) == y).float().mean().item()


def train_supervised(config: Config, steps: int | None = None, out_dir: str | Path | None = None,
                     progress: bool = False) -> tuple[Encoder, dict]:
    """Train the encoder of `config` with a linear head on r1 and cross-entropy for `steps` updates.

    steps: number of updates (None: the full schedule of `config`'s self-supervised run).
    out_dir: when given, the result is saved to out_dir/supervised.pt, and a saved result of the same
        configuration, schedule and step count is loaded instead of training again.
    Returns (encoder in eval mode on the CPU, summary) with summary keys steps, budget_steps (the
    updates of the full schedule), fraction (steps / budget_steps), seconds, images_per_s, device,
    train_loss, train_acc (last 10 steps), test_acc (the network with its own head), loaded (True
    when read from out_dir), history [(step, loss, acc)].
    """
    device = select_device(config.device)
    dtype = autocast_dtype(config.amp, device)
    pairs, test_set, n_classes = build_data(config, self_supervised=False)
    _, budget = budget_config(config, None)
    schedule, steps = budget_config(config, steps)

    saved = Path(out_dir) / RunFolder.SUPERVISED if out_dir is not None else None
    state = load_checkpoint(saved) if saved is not None and saved.exists() else None
    if reuse_finished_run(saved, state and state["schedule"], schedule, finished=state is not None
                          and state["summary"]["steps"] == steps):
        encoder = build_encoder(config)
        encoder.load_state_dict(state["encoder"])
        return encoder.eval(), {**state["summary"], "loaded": True}

    torch.manual_seed(config.seed)
    encoder = build_encoder(config).to(device)
    head = nn.Linear(config.n_rkhs, n_classes).to(device)
    # The milestones count epochs of the self-supervised run, as in `train`; the sampler's of the labelled split.
    optimizer, scheduler, scaler = build_optimisation(schedule, encoder, head, device, steps_per_epoch(config))
    labelled_epoch = steps_per_epoch(config, pairs)

    history, step, seen, t0 = [], 0, 0, time.perf_counter()
    events = EventLog(out_dir).open()
    events.text("config", schedule.to_dict())
    bar = tqdm(total=steps, disable=not progress, desc="supervised", unit="step", dynamic_ncols=True)
    sampler, loader = epoch_loader(pairs, config, device)
    while step < steps:
        sampler.set_epoch(step // labelled_epoch)
        encoder.train(), head.train()
        for batch in loader:
            x1, x2, y = pairs.views_on(batch, device)
            loss, acc = _update(encoder, head, x1, x2, y, (optimizer, scheduler, scaler), config, dtype, step)
            step += 1
            seen += 2 * len(y)
            history.append((step, round(loss, 5), acc))
            events.record({"kind": "supervised", "step": step, "loss": history[-1][1], "train_acc": history[-1][2],
                           "lr": scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{history[-1][1]:.3f}", acc=f"{history[-1][2]:.2f}")
            bar.update(1)
            if step == steps:
                break
    bar.close()
    seconds = time.perf_counter() - t0
    recent = history[-10:]
    summary = {"steps": steps, "budget_steps": budget, "fraction": steps / budget, "seconds": round(seconds, 1),
               "images_per_s": round(seen / max(seconds, 1e-9), 1), "device": str(device),
               "train_loss": sum(h[1] for h in recent) / len(recent),
               "train_acc": sum(h[2] for h in recent) / len(recent),
               "test_acc": head_accuracy(encoder, head, test_set, device, dtype), "loaded": False,
               "history": history}
    events.record({"kind": "supervised", "step": steps, "test_acc": summary["test_acc"]})
    events.close()
    encoder = encoder.eval().cpu()
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(saved, {"config": config.replace(device="auto").to_dict(),
                                "schedule": schedule.replace(device="auto").to_dict(), "summary": summary,
                                "encoder": encoder.state_dict()})
        save_json(saved.parent / RunFolder.SUPERVISED_SUMMARY, {k: v for k, v in summary.items() if k != "history"})
    return encoder, summary
