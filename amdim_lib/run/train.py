"""The training loop: one plain loop, readable top to bottom.

    for each batch of (view1, view2, label):
        features of both views in one forward pass (batch norm per view, as two passes would)
        AMDIM loss (1->5, 1->7, 5->5) + online linear/MLP probes on both views' detached global features
            (config.mixture_k > 0: the 1->7 term through k mixture components, amdim_lib.core.mixture)
        one Adam step, one scheduler step
    after each epoch: probe accuracy on the held-out split, checkpoint

Reproducibility: the shuffling of each epoch, the views of each item and the 5->5 locations are
fixed functions of the seed, and the checkpoint carries every RNG state, so a resumed run (even
one killed mid-epoch) continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .build import (autocast, build_data, build_encoder, build_mixture, build_model, build_optimisation, make_loader,
                    objective, select_device, steps_per_epoch)
from .checkpoints import save_json, unusable_checkpoint
from .events import EventLog
from .runfolder import (last_checkpoint_text, latest_run_checkpoint, read_metrics, save_run_checkpoint,
                        truncate_metrics)
from ..data.datasets import EXPECTED_CLASSES
from ..core.encoder import Encoder
from .memory import check_fits
from .presets import Config
from .probes import Probes, probe_loss
from .runfolder import RunFolder, RunFolderError, claim, writing
from .speed import autocast_dtype, execution_summary, prepare_device

# ----------------------------------------------------------------------------- the model, sampler, schedule


class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, index) keys of a seeded permutation, cut into global batches of `batch_size`.

    With several ranks, rank r takes the r-th slice of every global batch, so N processes together
    see exactly the batches one process would. `start` skips this rank's first items (to resume
    mid-epoch without replaying skipped batches). An incomplete last global batch is dropped.
    """

    def __init__(self, n: int, epoch: int, seed: int, batch_size: int = 1, start: int = 0, rank: int = 0,
                 world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes ({world_size})")
        self.n, self.epoch, self.seed, self.batch_size = n, epoch, seed, batch_size
        self.start, self.rank, self.world_size = start, rank, world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Move to another epoch (one DataLoader, and its persistent workers, serve the whole run)."""
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        batches = order[:self.n - self.n % self.batch_size].view(-1, self.world_size, self.batch_size // self.world_size)
        return batches[:, self.rank].flatten().tolist()[self.start:]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self._indices()])

    def __len__(self) -> int:
        return (self.n // self.batch_size) * (self.batch_size // self.world_size) - self.start


# ----------------------------------------------------------------------------- loaders, model, probe accuracy


def epoch_loader(pairs, config: Config, device: torch.device, rank: int = 0, world_size: int = 1):
    """(sampler, loader) over the two-view training set: one loader for a whole run (its workers
    persist), moved from epoch to epoch with `sampler.set_epoch`; each of `world_size` processes
    loads its share of the global batch."""
    sampler = EpochSampler(len(pairs), 0, config.seed, config.batch_size, rank=rank, world_size=world_size)
    return sampler, make_loader(pairs, config, device, config.batch_size // world_size, sampler)


@torch.no_grad()
def probe_accuracy(encoder: Encoder, probes: Probes, loader, device, dtype=None) -> dict[str, float]:
    """Accuracy of the online probes on a held-out loader, with BN in eval mode (training statistics)."""
    encoder.eval(), probes.eval()
    correct, total = {"linear": 0, "mlp": 0}, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, dtype):
            h = encoder(x).r1.flatten(1)
        for name, logits in probes(h.float()).items():
            correct[name] += (logits.argmax(1) == y).sum().item()
        total += len(y)
    return {name: c / total for name, c in correct.items()}


# ----------------------------------------------------------------------------- the state of a run

@dataclass
class Runtime:
    """Where and how a run executes: its device, autocast dtype and process group."""

    device: torch.device
    dtype: torch.dtype | None = None
    context: distributed.Context = field(default_factory=distributed.Context)


@dataclass
class TrainState:
    """Everything that changes from one update to the next: what a checkpoint holds.

    `encoder`, `probes` and `mixture` are the plain modules (their weights are what is saved); `model`
    is what a step calls: the same modules as one AMDIM module, compiled and DDP-wrapped as configured.
    """

    encoder: Encoder
    probes: Probes
    mixture: nn.Module | None
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    nce_rng: torch.Generator  # draws the 5->5 source locations
    step: int = 0
    skipped: int = 0
    last_eval: dict = field(default_factory=dict)

    def checkpoint(self, config: Config) -> dict:
        device_rng = torch.cuda.get_rng_state_all() if self.encoder_device().type == "cuda" else []
        return {"step": self.step, "skipped": self.skipped, "config": config.to_dict(), "eval": self.last_eval,
                "encoder": self.encoder.state_dict(), "probes": self.probes.state_dict(),
                **({"mixture": self.mixture.state_dict()} if self.mixture is not None else {}),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "nce": self.nce_rng.get_state(), "cuda": device_rng}}

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint of the same configuration (weights, optimiser, schedule, RNGs)."""
        self.encoder.load_state_dict(state["encoder"])
        self.probes.load_state_dict(state["probes"])
        if self.mixture is not None:
            self.mixture.load_state_dict(state["mixture"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.nce_rng.set_state(state["rng"]["nce"])
        if self.encoder_device().type == "cuda" and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step, self.skipped, self.last_eval = state["step"], state.get("skipped", 0), state.get("eval", {})

    def encoder_device(self) -> torch.device:
        return next(self.encoder.parameters()).device


def build_state(config: Config, n_classes: int, device: torch.device, steps_per_epoch: int) -> TrainState:
    """A fresh run's modules, optimiser, schedule and RNG on `device` (seeded by the caller)."""
    encoder = build_encoder(config).to(device)
    probes = Probes(config.n_rkhs, n_classes, dropout=config.probe_dropout).to(device)
    mixture = build_mixture(config)
    if mixture is not None:
        mixture.to(device)
    optimizer, scheduler, scaler = build_optimisation(config, encoder, probes, device, steps_per_epoch,
                                                      extra=(mixture,) if mixture is not None else ())
    return TrainState(encoder, probes, mixture, build_model(config, encoder, probes, mixture), optimizer, scheduler,
                      scaler, torch.Generator().manual_seed(config.seed + 1))


# ----------------------------------------------------------------------------- one update

def train_step(state: TrainState, x1, x2, y, config: Config, runtime: Runtime):
    """One update of encoder, probes and mixture head. Returns (AMDIM losses, probe losses, probe
    logits), or (None, {term: value}, None) without updating when a loss term or the gradient is not
    finite. With a mixture, losses["q"] holds its assignments."""
    device, context = runtime.device, runtime.context
    x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if config.compile and config.compile_mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()  # a new update: its graphs may reuse the last one's output memory
    with autocast(device, runtime.dtype):
        f1, f2, logits, components = state.model(x1, x2)
    # The objective outside autocast: scores and softmaxes over thousands of negatives in float32
    # (in bf16 a score near 16 is only known to 0.125).
    losses = objective(config, f1, f2, components, state.nce_rng, context.global_batch())
    # The probes see both views. Unlabelled items (label -1, e.g. STL-10's unlabeled split) add no
    # cross-entropy, only their logits' penalty, as in the official code.
    probe_losses = {name: probe_loss(out, torch.cat([y, y])) for name, out in logits.items()}
    total = losses["loss"] + sum(probe_losses.values())
    if not _all_ranks_finite(total, context):
        terms = {k: float(v.detach()) for k, v in {**losses, **probe_losses}.items() if v.dim() == 0}
        return None, {k: v for k, v in terms.items() if not math.isfinite(v)} or terms, None
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(total).backward()
    if not state.scaler.is_enabled():  # (the fp16 scaler skips non-finite gradients on its own)
        params = [p for group in state.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        if not _all_ranks_finite(grad_norm, context):
            state.optimizer.zero_grad(set_to_none=True)
            return None, {"gradient norm": float(grad_norm)}, None
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return losses, probe_losses, logits


def _all_ranks_finite(value: torch.Tensor, context: distributed.Context) -> bool:
    """Whether `value` is finite on every rank (all ranks must agree to skip or stop together)."""
    finite = torch.isfinite(value.detach()).float().reshape(1)
    if context.enabled:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def _batches(loader, stop: "StopRequests"):
    """The loader's batches, ending early where its workers went with a stop signal (a SIGTERM to the process
    group) while this process waited for the next batch; a loader failure without a stop signal is raised."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception:  # a worker gone mid-batch may leave a broken pipe or a half-written batch, not only this
            if stop.requested:
                return
            raise
        yield batch


class StopRequests:
    """While active, SIGINT/SIGTERM ask the loop to stop after the current step (a second signal of either
    kind interrupts at once). Outside the main thread signals cannot be caught, and this does nothing."""

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- the loop

_ANNOUNCED: set[str] = set()


def announce(line: str) -> None:
    """Print `line` once per process: a notebook that trains six runs on one machine says how it runs them once."""
    if line not in _ANNOUNCED:
        _ANNOUNCED.add(line)
        print(line)


def train(config: Config, out_dir: str | Path, resume: bool = False, stop_at_step: int | None = None,
          progress: bool = True, overwrite: bool = False) -> dict:
    """Train AMDIM with `config`, writing checkpoint.pt, config.json and metrics.jsonl into `out_dir`.

    A folder that already holds a run is refused unless asked: resume continues it from its newest
    readable checkpoint (same configuration; a folder without one starts fresh), overwrite deletes it
    first (amdim_lib.run.runfolder). The folder is locked while the run lasts.
    stop_at_step: end early after this many updates (a checkpoint is written), as if interrupted.
    SIGINT/SIGTERM (Ctrl-C, a kernel interrupt, a scheduler's stop) end the run after the current
    step with a checkpoint; `interrupted` in the summary names the signal.
    Returns a summary: steps, final losses, online probe test accuracies, images/s.
    """
    out = Path(out_dir)
    runtime = start_runtime(config)
    with claim(out, config, resume=resume, overwrite=overwrite) if runtime.context.is_main else contextlib.nullcontext():
        try:
            return _train_in(config, out, runtime, resume, stop_at_step, progress)
        except RuntimeError as error:
            lost = None if isinstance(error, RunFolderError) else distributed.lost_peer(error, runtime.context)
            if lost is None:
                raise
            # One line instead of the collective's traceback: who left, and what to run next.
            raise RunFolderError(f"{lost}; {last_checkpoint_text(out)}: start the run again with --resume "
                                 "(resume=True)") from None


def _train_in(config: Config, out: Path, runtime: Runtime, resume: bool, stop_at_step: int | None,
              progress: bool) -> dict:
    """The loop of `train`, in a run folder this process holds."""
    torch.manual_seed(config.seed)
    pairs, test_set, n_classes = build_data(config)
    per_epoch = steps_per_epoch(config, pairs)
    total_steps = per_epoch * config.epochs
    state = build_state(config, n_classes, runtime.device, per_epoch)
    if resume:
        resume_from_checkpoint(state, config, out, repair=runtime.context.is_main)
    if runtime.context.enabled:
        state.model = distributed.wrap(state.model, runtime.device, config.tasks)
    log = MetricsLog(out, state.step, runtime.context.is_main)
    if runtime.context.is_main:
        announce(execution_summary(config, runtime.device, runtime.dtype))  # how this machine runs it
        with writing(out / RunFolder.CONFIG, out):
            save_json(out / RunFolder.CONFIG, config.to_dict())
    # Loaders get their own generators: creating one must not draw from the global RNG (dropout's).
    test_loader = make_loader(test_set, config, runtime.device, batch_size=256)
    sampler, loader = epoch_loader(pairs, config, runtime.device, runtime.context.rank, runtime.context.world_size)
    bar = tqdm(total=total_steps, initial=state.step, disable=not (progress and runtime.context.is_main),
               desc="train", unit="step", dynamic_ncols=True)
    meter = Throughput(runtime.context.world_size)
    last, halt = {}, False
    with StopRequests() as stop, log:
        log.events.text("config", config.to_dict())
        while state.step < total_steps and state.step != stop_at_step and not halt:
            epoch, start = divmod(state.step, per_epoch)
            sampler.set_epoch(epoch, start=start * (config.batch_size // runtime.context.world_size))
            state.model.train()
            for batch in _batches(loader, stop):
                x1, x2, y = pairs.views_on(batch, runtime.device)
                if meter.images == 0:
                    log.events.view_pairs(x1, x2, state.step)
                outcome = train_step(state, x1, x2, y, config, runtime)
                state.step += 1
                meter.add(len(y))
                last = _record_step(state, outcome, y, config, runtime, log, bar, meter, per_epoch,
                                    (total_steps, stop_at_step)) or last
                bar.update(1)
                end_of_epoch = state.step % per_epoch == 0
                if end_of_epoch and ((state.step // per_epoch) % config.eval_every == 0 or state.step == total_steps):
                    _evaluate_probes(state, test_loader, runtime, log, bar, per_epoch)
                halt = state.step == stop_at_step or distributed.any_rank(bool(stop.requested), runtime.context)
                if end_of_epoch or halt or (config.checkpoint_every and state.step % config.checkpoint_every == 0):
                    save_state(state, config, out, runtime.context)
                if halt:
                    break
            if stop.requested and not halt:  # the workers went with the signal before the next batch came
                save_state(state, config, out, runtime.context)
                halt = True
    bar.close()
    if stop.requested and runtime.context.is_main:
        print(f"{stop.requested} received: stopped after step {state.step} with a checkpoint in {out}; "
              "continue with resume=True (--resume)")
    return {"steps": state.step, "total_steps": total_steps, "finished": state.step >= total_steps,
            "interrupted": stop.requested, "skipped_steps": state.skipped, "seconds": round(meter.seconds(), 1),
            "images_per_s": meter.images_per_s(), "last": last, "eval": state.last_eval}


def start_runtime(config: Config) -> Runtime:
    """The device (this process's GPU under torchrun), its autocast dtype and the process group;
    a configuration too large for the device's memory is refused before anything is allocated."""
    device = select_device(config.device)
    context = distributed.setup(device.type)  # one process, or one of torchrun's
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if config.batch_size % context.world_size:
        raise ValueError(f"batch_size={config.batch_size} (the global batch) must be divisible by the "
                         f"{context.world_size} processes")
    dtype = autocast_dtype(config.amp, device)
    if config.amp == "auto" and device.type == "cpu":  # each rank timed its own probe: all must agree
        dtype = torch.bfloat16 if distributed.any_rank(dtype is not None, context) else None
    check_fits(config, device, config.batch_size // context.world_size, EXPECTED_CLASSES.get(config.dataset, 10),
               half_precision=dtype is not None)
    prepare_device(device)
    return Runtime(device, dtype, context)


def resume_from_checkpoint(state: TrainState, config: Config, out: Path, repair: bool = True) -> None:
    """Restore the newest readable checkpoint of `out`, if any; one of another configuration is refused,
    and so is one whose contents do not fit this run's modules (a ValueError naming it). repair: put
    the checkpoint resumed from in place of an unreadable checkpoint.pt (one process of a run does)."""
    saved = latest_run_checkpoint(out, repair=repair)
    if saved is None:
        return
    where = f"the newest readable checkpoint in {out}"
    try:
        recorded = Config.from_dict(saved["config"])
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise unusable_checkpoint(where, error) from None
    # Where and how the run executes may change on resume; what it computes may not.
    if recorded.outcome() != config.outcome():
        raise ValueError(f"the checkpoint in {out} was written with a different configuration; resume with "
                         "the same settings or choose another output directory")
    try:
        _check_like("scheduler state", saved["scheduler"], state.scheduler.state_dict())
        state.restore(saved)
        _check_restored(state)
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError, IndexError) as error:
        raise unusable_checkpoint(where, error) from None


def _check_like(name: str, saved, fresh) -> None:
    """`saved` has the structure of `fresh` where both have an entry: the same types, lists of the
    same length (load_state_dict takes a scheduler's state as it comes; a wrong one fails or misleads later)."""
    if type(saved) is not type(fresh) or (isinstance(fresh, (list, tuple)) and len(saved) != len(fresh)):
        raise ValueError(f"its {name} is {type(saved).__name__} {str(saved)[:60]}, unlike a fresh run's")
    if isinstance(fresh, dict):
        for key in fresh.keys() & saved.keys():
            _check_like(f"{name}[{key!r}]", saved[key], fresh[key])
    elif isinstance(fresh, (list, tuple)):
        for index, (a, b) in enumerate(zip(saved, fresh)):
            _check_like(f"{name}[{index}]", a, b)


def _check_restored(state: TrainState) -> None:
    """What the modules' load_state_dict lets through: counters of the wrong kind, Adam's moments
    missing or of other shapes than their parameters."""
    if type(state.step) is not int or state.step < 0 or type(state.skipped) is not int:
        raise ValueError(f"its step {state.step!r} (skipped {state.skipped!r}) is not a number of updates")
    if state.step > state.skipped and not state.optimizer.state:
        raise ValueError(f"it holds no optimizer state after {state.step} updates")
    for group in state.optimizer.param_groups:
        for param in group["params"]:
            for key, value in state.optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor) or (value.dim() and value.shape != param.shape):
                    raise ValueError(f"its optimizer's {key} is {type(value).__name__} "
                                     f"{tuple(getattr(value, 'shape', ()))} for a parameter of shape {tuple(param.shape)}")


def save_state(state: TrainState, config: Config, out: Path, context: distributed.Context) -> None:
    """Rank 0 writes the checkpoint; the others wait, so that nobody runs ahead of the file."""
    if context.is_main:
        with writing(out / RunFolder.CHECKPOINT, out):
            save_run_checkpoint(out, state.checkpoint(config), keep=config.keep_checkpoints)
    distributed.barrier(context)


class MetricsLog:
    """metrics.jsonl of a run, appended one flushed JSON line a record (rank 0 only), and the same
    records as TensorBoard events (run/events.py). Opening it drops the lines a killed run wrote after
    its last checkpoint, so a resumed log (and its events) reads as one run."""

    def __init__(self, out: Path, step: int, enabled: bool = True):
        self.path, self.enabled, self.file = out / RunFolder.METRICS, enabled, None
        self.events = EventLog(out, enabled)
        if enabled:
            with writing(self.path, out):
                truncate_metrics(out, step)

    def __enter__(self):
        if self.enabled:
            with writing(self.path, self.path.parent):
                self.file = open(self.path, "a")
            self.events.open(read_metrics(self.path.parent))
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()
        self.events.close()

    def write(self, kind: str, values: dict) -> None:
        if self.file is not None:
            with writing(self.path, self.path.parent):
                self.file.write(json.dumps({"kind": kind, **values}) + "\n")
                self.file.flush()
            self.events.record({"kind": kind, **values})


class Throughput:
    """Images (both views, every process) per second since the loop started."""

    def __init__(self, world_size: int = 1):
        self.world_size, self.images, self.start = world_size, 0, time.perf_counter()

    def add(self, batch: int) -> None:
        self.images += 2 * batch * self.world_size

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def images_per_s(self) -> float:
        return round(self.images / max(self.seconds(), 1e-9), 1)


def _record_step(state: TrainState, outcome, y, config: Config, runtime: Runtime, log: MetricsLog, bar, meter,
                 steps_per_epoch: int, last_steps: tuple) -> dict | None:
    """Log a skipped step (or stop the run on a non-finite one), and every `log_every` steps (and a
    run's last) the losses and probe accuracies; returns the logged record, if any."""
    losses, probe_losses, logits = outcome
    if losses is None:
        message = f"non-finite values at step {state.step}: {probe_losses}"
        if config.on_nonfinite == "stop":
            raise FloatingPointError(f"{message}. Nothing was updated at this step; {last_checkpoint_text(log.path.parent)}. "
                                     "Lower lr, keep tclip on, or set on_nonfinite=skip.")
        state.skipped += 1
        log.write("skip", {"step": state.step, "terms": probe_losses})
        bar.write(f"skipped step {state.step}: {message}")
        return None
    if state.step % config.log_every and state.step not in last_steps:
        return None
    context = runtime.context
    y = torch.cat([y, y]).to(runtime.device)  # the probes' logits cover both views
    usage = _component_usage(losses.pop("q"), context) if "q" in losses else None
    losses = distributed.mean_over_ranks(losses, context)
    probe_losses = distributed.mean_over_ranks(probe_losses, context)
    record = {"step": state.step, "epoch": state.step / steps_per_epoch, "lr": state.scheduler.get_last_lr()[0],
              **{k: round(v.item(), 5) for k, v in losses.items()},
              **{f"probe_{k}_loss": round(v.item(), 5) for k, v in probe_losses.items()},
              **{f"probe_{k}_acc": (v.argmax(1) == y)[y >= 0].float().mean().nan_to_num().item()
                 for k, v in logits.items()},
              "images_per_s": meter.images_per_s(), **({"usage": usage} if usage is not None else {})}
    log.write("train", record)
    bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['probe_linear_acc']:.2f}")
    return record


def _evaluate_probes(state: TrainState, test_loader, runtime: Runtime, log: MetricsLog, bar,
                     steps_per_epoch: int) -> None:
    """The online probes' test accuracy at the end of an epoch (every rank: their BN states agree)."""
    acc = probe_accuracy(state.encoder, state.probes, test_loader, runtime.device, runtime.dtype)
    state.last_eval = {"step": state.step, "epoch": state.step // steps_per_epoch,
                       **{f"test_{k}_acc": v for k, v in acc.items()}}
    log.write("eval", state.last_eval)
    bar.write(f"epoch {state.last_eval['epoch']}: online probes on the test split: "
              f"linear {acc['linear']:.3f}, MLP {acc['mlp']:.3f}")
    state.model.train()


class TrainingInterrupted(KeyboardInterrupt):
    """A signal (Ctrl-C, a kernel interrupt, SIGTERM) stopped a run after a checkpoint; `signal` names it."""

    def __init__(self, signal: str, message: str):
        super().__init__(message)
        self.signal = signal


def train_until(config: Config, run_dir: str | Path, budget: int, progress: bool = False) -> dict:
    """`train` in `run_dir` up to update `budget` (see `budget_config`), resuming the run's checkpoint
    when there is one; returns train's summary. A signal that stopped the run raises TrainingInterrupted
    (call again to continue), so a caller never mistakes a partial run for a finished one."""
    summary = train(config, run_dir, resume=True, stop_at_step=budget, progress=progress)
    if summary["interrupted"]:
        raise TrainingInterrupted(summary["interrupted"], f"{summary['interrupted']}: training stopped in {run_dir} "
                                  f"at update {summary['steps']} of {budget} (checkpoint written); run it again to continue")
    if summary["steps"] < budget:
        raise RuntimeError(f"{run_dir}: training ended after {summary['steps']} of {budget} updates")
    return summary


def _component_usage(q: torch.Tensor, context: distributed.Context) -> list[float]:
    """Share of the locations each mixture component wins (argmax of q (B, k, L)) over the global batch."""
    counts = torch.bincount(q.argmax(1).flatten(), minlength=q.shape[1]).float()
    if context.enabled:
        torch.distributed.all_reduce(counts)
    return [round(float(c), 4) for c in counts / counts.sum()]


