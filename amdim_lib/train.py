"""The training loop: one plain loop, readable top to bottom.

    for each batch of (view1, view2, label):
        features of both views in one forward pass
        AMDIM loss (1->5, 1->7, 5->5) + online linear/MLP probes on the detached global feature
            (config.mixture_k > 0: the 1->7 term through k mixture components, amdim_lib.mixture)
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
import os
import signal
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .checkpoints import latest_run_checkpoint, load_checkpoint, save_run_checkpoint
from .datasets import build_dataset, num_classes, self_supervised_split
from .encoder import Encoder, Features
from .objectives import amdim_loss
from .presets import Config
from .batched_views import BatchedViews
from .views import Transformed, ViewPair, make_two_views, eval_transform, resolve_policy

# ----------------------------------------------------------------------------- devices and precision

def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; anything else is taken as given."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device='auto' or 'cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device {name!r} requested but MPS is not available; use device='auto' or 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`, or None for full precision."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


# ----------------------------------------------------------------------------- probes, sampler, schedule

class Probes(nn.Module):
    """Online classifiers on the detached global feature: linear, and MLP as in the paper."""

    def __init__(self, n_in: int, n_classes: int, hidden: int = 1024, dropout: float = 0.2):
        super().__init__()
        self.linear = nn.Linear(n_in, n_classes)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"linear": self.linear(h), "mlp": self.mlp(h)}


class AMDIM(nn.Module):
    """The encoder, its online probes and, with `mixture_k`, the mixture head as one module (what DDP wraps).

    `encoder` may be a torch.compile'd wrapper; checkpoints store the plain module's weights.
    """

    def __init__(self, encoder: Encoder, probes: Probes, channels_last: bool = False, mixture: nn.Module | None = None):
        super().__init__()
        self.encoder, self.probes, self.channels_last, self.mixture = encoder, probes, channels_last, mixture

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        """Features of both views (one pass: BN sees them together), probe logits on view 1's r1 and,
        with a mixture head, the k components of each view's r1 (else None). The head runs here, inside
        the forward that DDP wraps, so that its gradients are synchronised like the encoder's."""
        x = torch.cat([x1, x2])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        both = self.encoder(x)
        batch = len(x1)
        f1 = Features(*(t[:batch] for t in both))
        f2 = Features(*(t[batch:] for t in both))
        components = None if self.mixture is None else (self.mixture(f1.r1), self.mixture(f2.r1))
        return f1, f2, self.probes(f1.r1.detach().flatten(1).float()), components


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


def lr_factor(step: int, warmup_steps: int, milestone_steps: list[int], gamma: float) -> float:
    """Linear warm-up over the first updates, then x gamma at each milestone (MultiStepLR by epoch)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    return warm * gamma ** sum(step >= m for m in milestone_steps)


# ----------------------------------------------------------------------------- checkpoints and data

def encoder_from_checkpoint(path: str | Path) -> tuple[Encoder, Config]:
    """The trained encoder (in eval mode, on the CPU) and the configuration it was trained with."""
    state = load_checkpoint(path)
    config = Config.from_dict(state["config"])
    encoder = build_encoder(config)
    encoder.load_state_dict(state["encoder"])
    return encoder.eval(), config


def build_encoder(config: Config) -> Encoder:
    encoder = Encoder(config.image_size, config.ndf, config.n_rkhs, config.n_depth, config.use_bn)
    # Weights in NHWC order too, so that no convolution converts layouts back and forth.
    return encoder.to(memory_format=torch.channels_last) if config.channels_last else encoder


def make_loader(dataset, config: Config, device: torch.device, batch_size: int, sampler=None):
    """A DataLoader with the run's workers (kept alive across epochs) and pinned memory on CUDA."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=sampler is not None,
                                       num_workers=config.num_workers, persistent_workers=config.num_workers > 0,
                                       pin_memory=device.type == "cuda",
                                       generator=torch.Generator().manual_seed(config.seed))


def epoch_loader(pairs, config: Config, device: torch.device, rank: int = 0, world_size: int = 1):
    """(sampler, loader) over the two-view training set: one loader for a whole run (its workers
    persist), moved from epoch to epoch with `sampler.set_epoch`; each of `world_size` processes
    loads its share of the global batch."""
    sampler = EpochSampler(len(pairs), 0, config.seed, config.batch_size, rank=rank, world_size=world_size)
    return sampler, make_loader(pairs, config, device, config.batch_size // world_size, sampler)


def build_model(config: Config, encoder: Encoder, probes: Probes, mixture: nn.Module | None = None) -> AMDIM:
    """Encoder (compiled when `config.compile`), probes and mixture head as the module that training steps call."""
    return AMDIM(torch.compile(encoder) if config.compile else encoder, probes, config.channels_last, mixture)


def build_mixture(config: Config) -> nn.Module | None:
    """The mixture head m_k when `config.mixture_k` > 0 (amdim_lib.mixture), else None."""
    from .mixture import MixtureHead
    return MixtureHead(config.n_rkhs, config.mixture_k, config.mixture_hidden or None) if config.mixture_k else None


def build_splits(config: Config, self_supervised: bool = False):
    """The configured data set's (train, test) splits, untransformed.

    self_supervised=True: the training split is the one self-supervised training reads (STL-10:
    train+unlabeled, whose unlabelled items carry label -1); otherwise the labelled one, for probes.
    """
    train_split = self_supervised_split(config.dataset) if self_supervised else "train"
    return tuple(build_dataset(config.dataset, split, config.image_size, config.data_dir, size, config.seed,
                               config.skip_bad_images, config.download)
                 for split, size in ((train_split, config.train_size), ("test", config.test_size)))


def build_data(config: Config, self_supervised: bool = True):
    """(two-view training set, test set with the test transform, number of classes).

    self_supervised=False keeps the same views but reads the labelled training split (STL-10:
    `train`, not `train+unlabeled`), as the supervised baseline needs.
    """
    train_base, test_base = build_splits(config, self_supervised=self_supervised)
    policy = resolve_policy(config.policy, config.image_size)
    views = (BatchedViews(policy, config.image_size, level=config.augment) if config.batch_views
             else make_two_views(policy, config.image_size, level=config.augment))
    pairs = ViewPair(train_base, views, seed=config.seed)
    test = Transformed(test_base, eval_transform(policy, config.image_size))
    if len(pairs) < config.batch_size:
        split = "training" if self_supervised else "labelled training"
        raise ValueError(f"the {split} split has {len(pairs)} images, fewer than one batch of {config.batch_size}; "
                         "lower batch_size or add data")
    return pairs, test, num_classes(train_base)


def steps_per_epoch(config: Config) -> int:
    """Updates per epoch of the self-supervised run of `config` (builds the data set's index only)."""
    train_split, _ = build_splits(config, self_supervised=True)
    return len(train_split) // config.batch_size


def budget_config(config: Config, steps: int | None) -> tuple[Config, int]:
    """(configuration, updates) of a run with a budget of `steps` updates (None: the configuration's
    own schedule). A budgeted run: enough epochs, constant learning rate after a warm-up of a tenth of
    the budget (at most the configured warm-up), no step decay; it stops after `steps` updates."""
    per_epoch = steps_per_epoch(config)
    if per_epoch < 1:
        raise ValueError(f"the training split is smaller than one batch of {config.batch_size}")
    if steps is None:
        return config, per_epoch * config.epochs
    if steps < 1:
        raise ValueError(f"steps={steps}; a budget of at least one update")
    warmup = min(config.warmup_steps, max(1, steps // 10)) if config.warmup_steps else 0
    return config.replace(epochs=math.ceil(steps / per_epoch), milestones=(), warmup_steps=warmup), int(steps)


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


def autocast(device: torch.device, dtype):
    """torch.autocast for `dtype` on `device`, or a no-op context for full precision."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# ----------------------------------------------------------------------------- the loop

def train_step(model, optimizer, scheduler, scaler, x1, x2, y, config: Config, nce_rng, device, dtype,
               context: distributed.Context = distributed.Context()):
    """One update of encoder, probes and mixture head (`model`: an AMDIM module, or DDP around one).
    Returns (AMDIM losses, probe losses, probe logits), or (None, {term: value}, None) without updating
    when a loss term or the gradient is not finite. With a mixture, losses["q"] holds its assignments."""
    x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    with autocast(device, dtype):
        f1, f2, logits, components = model(x1, x2)
        if components is None:
            losses = amdim_loss(f1, f2, config.tclip, config.reg_weight, config.tasks, generator=nce_rng, context=context)
        else:  # the 1t7 task through the k mixture components (amdim_lib.mixture)
            from .mixture import mixture_amdim_loss
            losses = mixture_amdim_loss(f1, f2, components, config.mixture_tau, config.mixture_alpha, config.tclip,
                                        config.reg_weight, nce_rng, config.tasks, context=context)
    # Unlabelled items (label -1, e.g. STL-10's unlabeled split) train the encoder but never the probes.
    labelled = y >= 0
    probe_losses = {name: F.cross_entropy(out[labelled], y[labelled]) if labelled.any() else out.sum() * 0.0
                    for name, out in logits.items()}
    total = losses["loss"] + sum(probe_losses.values())
    if not _all_ranks_finite(total, context):
        terms = {k: float(v.detach()) for k, v in {**losses, **probe_losses}.items() if v.dim() == 0}
        return None, {k: v for k, v in terms.items() if not math.isfinite(v)} or terms, None
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    if not scaler.is_enabled():  # (the fp16 scaler skips non-finite gradients on its own)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        if not _all_ranks_finite(grad_norm, context):
            optimizer.zero_grad(set_to_none=True)
            return None, {"gradient norm": float(grad_norm)}, None
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return losses, probe_losses, logits


def _all_ranks_finite(value: torch.Tensor, context: distributed.Context) -> bool:
    """Whether `value` is finite on every rank (all ranks must agree to skip or stop together)."""
    finite = torch.isfinite(value.detach()).float().reshape(1)
    if context.enabled:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def build_optimisation(config: Config, encoder, probes, device, steps_per_epoch: int, extra: tuple = ()):
    """Adam over encoder, probes and the `extra` modules, the warm-up + step-decay schedule, and the
    fp16 grad scaler."""
    params = [p for module in (encoder, probes, *extra) for p in module.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=config.betas, eps=config.eps,
                                 weight_decay=config.weight_decay, **({"fused": True} if device.type == "cuda" else {}))
    milestone_steps = [m * steps_per_epoch for m in config.milestones]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, milestone_steps, config.gamma))
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(config.amp, device) == torch.float16)
    return optimizer, scheduler, scaler


class StopRequests:
    """While active, SIGINT/SIGTERM ask the loop to stop after the current step (a second SIGINT
    interrupts at once). Outside the main thread signals cannot be caught, and this does nothing."""

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
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


def train(config: Config, out_dir: str | Path, resume: bool = False, stop_at_step: int | None = None,
          progress: bool = True) -> dict:
    """Train AMDIM with `config`, writing checkpoint.pt, config.json and metrics.jsonl into `out_dir`.

    resume: continue from the run's newest readable checkpoint when there is one (else start fresh).
    stop_at_step: end early after this many updates (a checkpoint is written), as if interrupted.
    SIGINT/SIGTERM (Ctrl-C, a kernel interrupt, a scheduler's stop) end the run after the current
    step with a checkpoint; `interrupted` in the summary names the signal.
    Returns a summary: steps, final losses, online probe test accuracies, images/s.
    """
    out = Path(out_dir)
    device = select_device(config.device)
    context = distributed.setup(device.type)  # one process, or one of torchrun's
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if config.batch_size % context.world_size:
        raise ValueError(f"batch_size={config.batch_size} (the global batch) must be divisible by the "
                         f"{context.world_size} processes")
    local_batch = config.batch_size // context.world_size
    progress = progress and context.is_main
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels once
    dtype = autocast_dtype(config.amp, device)
    torch.manual_seed(config.seed)

    pairs, test_set, n_classes = build_data(config)
    encoder = build_encoder(config).to(device)
    probes = Probes(config.n_rkhs, n_classes, dropout=config.probe_dropout).to(device)
    mixture = build_mixture(config)
    if mixture is not None:
        mixture.to(device)
    steps_per_epoch = len(pairs) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    optimizer, scheduler, scaler = build_optimisation(config, encoder, probes, device, steps_per_epoch,
                                                      extra=(mixture,) if mixture is not None else ())
    nce_rng = torch.Generator().manual_seed(config.seed + 1)  # draws the 5->5 source locations

    step, skipped, last_eval = 0, 0, {}
    state = latest_run_checkpoint(out) if resume else None
    if state is not None:
        saved = Config.from_dict(state["config"])
        # Where and how the run executes may change on resume; what it computes may not.
        if saved.outcome() != config.outcome():
            raise ValueError(f"the checkpoint in {out} was written with a different configuration; resume with "
                             "the same settings or choose another output directory")
        encoder.load_state_dict(state["encoder"])
        probes.load_state_dict(state["probes"])
        if mixture is not None:
            mixture.load_state_dict(state["mixture"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        nce_rng.set_state(state["rng"]["nce"])
        if device.type == "cuda" and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        step, skipped, last_eval = state["step"], state.get("skipped", 0), state.get("eval", {})
    model = build_model(config, encoder, probes, mixture)
    if context.enabled:
        distributed.sync_batch_norms(model)
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=set(config.tasks) != {"1t5", "1t7", "5t5"})  # a task subset leaves a head unused
    log_path = out / "metrics.jsonl"
    if context.is_main:
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        _truncate_log(log_path, step)  # drop lines a killed run wrote after its last checkpoint

    def checkpoint():
        if not context.is_main:  # rank 0 writes; the others wait so that nobody runs ahead of the file
            distributed.barrier(context)
            return
        save_run_checkpoint(out, {
            "step": step, "skipped": skipped, "config": config.to_dict(), "eval": last_eval,
            "encoder": encoder.state_dict(), "probes": probes.state_dict(),
            **({"mixture": mixture.state_dict()} if mixture is not None else {}),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "nce": nce_rng.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
        }, keep=config.keep_checkpoints)
        distributed.barrier(context)

    # Loaders get their own generators: creating one must not draw from the global RNG (dropout's).
    test_loader = make_loader(test_set, config, device, batch_size=256)
    sampler, loader = epoch_loader(pairs, config, device, context.rank, context.world_size)
    bar = tqdm(total=total_steps, initial=step, disable=not progress, desc="train", unit="step", dynamic_ncols=True)
    last, t0, seen = {}, time.perf_counter(), 0
    with StopRequests() as stop, (open(log_path, "a") if context.is_main else open(os.devnull, "w")) as log:
        def record(kind: str, values: dict):
            log.write(json.dumps({"kind": kind, **values}) + "\n")
            log.flush()

        halt = False
        while step < total_steps and step != stop_at_step and not halt:
            epoch, start = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch, start=start * local_batch)
            model.train()
            for batch in loader:
                x1, x2, y = pairs.views_on(batch, device)
                losses, probe_losses, logits = train_step(model, optimizer, scheduler, scaler, x1, x2, y,
                                                          config, nce_rng, device, dtype, context)
                step += 1
                seen += 2 * len(y) * context.world_size
                if losses is None:
                    message = f"non-finite values at step {step}: {probe_losses}"
                    if config.on_nonfinite == "stop":
                        raise FloatingPointError(f"{message}. Nothing was updated; the last good checkpoint is in "
                                                 f"{out}. Lower lr, keep tclip on, or set on_nonfinite=skip.")
                    skipped += 1
                    record("skip", {"step": step, "terms": probe_losses})
                    bar.write(f"skipped step {step}: {message}")
                elif step % config.log_every == 0 or step in (total_steps, stop_at_step):  # (a run's last step too)
                    y = y.to(device)
                    usage = _component_usage(losses.pop("q"), context) if "q" in losses else None
                    losses = distributed.mean_over_ranks(losses, context)
                    probe_losses = distributed.mean_over_ranks(probe_losses, context)
                    last = {"step": step, "epoch": step / steps_per_epoch, "lr": scheduler.get_last_lr()[0],
                            **{k: round(v.item(), 5) for k, v in losses.items()},
                            **{f"probe_{k}_loss": round(v.item(), 5) for k, v in probe_losses.items()},
                            **{f"probe_{k}_acc": (v.argmax(1) == y)[y >= 0].float().mean().nan_to_num().item()
                               for k, v in logits.items()},
                            "images_per_s": round(seen / (time.perf_counter() - t0), 1),
                            **({"usage": usage} if usage is not None else {})}
                    record("train", last)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['probe_linear_acc']:.2f}")
                bar.update(1)
                end_of_epoch = step % steps_per_epoch == 0
                if end_of_epoch and ((step // steps_per_epoch) % config.eval_every == 0 or step == total_steps):
                    acc = probe_accuracy(encoder, probes, test_loader, device, dtype)  # (every rank: BN states agree)
                    last_eval = {"step": step, "epoch": step // steps_per_epoch,
                                 **{f"test_{k}_acc": v for k, v in acc.items()}}
                    record("eval", last_eval)
                    bar.write(f"epoch {last_eval['epoch']}: online probes on the test split: "
                              f"linear {acc['linear']:.3f}, MLP {acc['mlp']:.3f}")
                    model.train()
                halt = step == stop_at_step or distributed.any_rank(bool(stop.requested), context)
                if end_of_epoch or halt or (config.checkpoint_every and step % config.checkpoint_every == 0):
                    checkpoint()
                if halt:
                    break
    bar.close()
    if stop.requested and context.is_main:
        print(f"{stop.requested} received: stopped after step {step} with a checkpoint in {out}; "
              "continue with resume=True (--resume)")
    elapsed = time.perf_counter() - t0
    return {"steps": step, "total_steps": total_steps, "finished": step >= total_steps,
            "interrupted": stop.requested, "skipped_steps": skipped,
            "seconds": round(elapsed, 1), "images_per_s": round(seen / max(elapsed, 1e-9), 1),
            "last": last, "eval": last_eval}


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


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (kind 'train' every log_every steps, 'eval' per evaluation)."""
    path = Path(out_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
