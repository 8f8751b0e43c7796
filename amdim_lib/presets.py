"""Named configurations: `smoke` (seconds, for tests), `demo` (CPU minutes) and `paper` per data set.

A configuration is a flat dataclass so that it prints, saves into checkpoints and overrides from the
command line (`--set key=value`) without any framework.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .objectives import TASKS

PRESETS_NAMES = ("smoke", "demo", "paper")
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
          "tuple[str, ...]": (tuple,), "tuple[float, float]": (tuple,), "tuple[int, ...]": (tuple,)}


@dataclass
class Config:
    # data
    dataset: str = "shapes"
    data_dir: str | None = None          # root of a data set on disk; Shapes needs none
    image_size: int = 32
    train_size: int | None = None        # Shapes: images per split (None: the data set's default)
    test_size: int | None = None
    augment: str = "full"                # full | crop | flip | none
    skip_bad_images: bool = False        # image folders: skip (and count) unreadable files instead of failing
    # encoder
    ndf: int = 128
    n_rkhs: int = 1024
    n_depth: int = 3
    use_bn: bool = False
    # objective
    tclip: float | None = 20.0
    reg_weight: float = 0.05
    tasks: tuple[str, ...] = TASKS
    # optimisation (Adam with linear warm-up, then step decay at the milestone epochs)
    batch_size: int = 200
    epochs: int = 300
    lr: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-5
    warmup_steps: int = 500
    milestones: tuple[int, ...] = (250, 280)
    gamma: float = 0.2
    # run
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N | mps
    amp: str = "auto"                    # auto (bf16/fp16 on CUDA, off elsewhere) | bf16 | fp16 | off
    num_workers: int = 0
    log_every: int = 10                  # steps between lines of metrics.jsonl
    eval_every: int = 1                  # epochs between evaluations of the online probes
    checkpoint_every: int = 0            # steps between checkpoints (0: at the end of each epoch only)
    keep_checkpoints: int = 2            # how many past checkpoints stay in <run>/checkpoints/
    on_nonfinite: str = "stop"           # stop | skip: what a NaN/inf loss or gradient does

    def __post_init__(self):
        # Check everything before any work starts; each message names the allowed values.
        from .encoder import IMAGE_SIZES, local_width
        from .views import LEVELS

        def need(ok: bool, message: str):
            if not ok:
                raise ValueError(f"invalid configuration: {message}")

        for f in dataclasses.fields(self):  # types first, so that the range checks below can compare
            value, allowed = getattr(self, f.name), _TYPES[str(f.type).split(" | ")[0]]
            optional = "None" in str(f.type)
            ok = (value is None and optional) or (isinstance(value, allowed) and not
                                                  (isinstance(value, bool) and allowed in ((int,), (int, float))))
            need(ok, f"{f.name}={value!r} must be {str(f.type).replace('tuple[str, ...]', 'a tuple of str')}")

        need(self.dataset in PRESETS, f"dataset={self.dataset!r}; choose one of {sorted(PRESETS)}")
        need(self.image_size in IMAGE_SIZES, f"image_size={self.image_size}; choose one of {IMAGE_SIZES}")
        need(self.ndf >= 1 and self.n_depth >= 1, f"ndf={self.ndf}, n_depth={self.n_depth}; both must be >= 1")
        wide = local_width(self.image_size, max(self.ndf, 1))
        need(self.n_rkhs >= wide, f"n_rkhs={self.n_rkhs} is below the local feature width {wide} at "
             f"{self.image_size} px with ndf={self.ndf}; use n_rkhs >= {wide}")
        need(self.batch_size >= 2, f"batch_size={self.batch_size}; NCE needs other images as negatives, use >= 2")
        need(self.epochs >= 1, f"epochs={self.epochs}; must be >= 1")
        need(len(self.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
             f"betas={self.betas}; two numbers in [0, 1)")
        need(all(isinstance(m, int) and m >= 1 for m in self.milestones) and list(self.milestones) == sorted(self.milestones),
             f"milestones={self.milestones}; increasing epoch numbers >= 1")
        need(self.lr > 0 and self.warmup_steps >= 0, f"lr={self.lr}, warmup_steps={self.warmup_steps}; lr > 0, warmup >= 0")
        need(self.augment in LEVELS, f"augment={self.augment!r}; choose one of {LEVELS}")
        need(bool(self.tasks) and set(self.tasks) <= set(TASKS), f"tasks={self.tasks}; a non-empty subset of {TASKS}")
        need(self.amp in ("auto", "bf16", "fp16", "off"), f"amp={self.amp!r}; choose auto, bf16, fp16 or off")
        need(self.tclip is None or self.tclip > 0, f"tclip={self.tclip}; a positive number or None (no clipping)")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            need(value is None or value >= 1, f"{name}={value}; a positive count or None")
        need(self.on_nonfinite in ("stop", "skip"), f"on_nonfinite={self.on_nonfinite!r}; choose stop or skip")
        need(self.keep_checkpoints >= 1, f"keep_checkpoints={self.keep_checkpoints}; must be >= 1")
        need(self.num_workers >= 0 and self.log_every >= 1 and self.eval_every >= 1 and self.checkpoint_every >= 0,
             "num_workers, checkpoint_every must be >= 0 and log_every, eval_every >= 1")

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}; known keys: {sorted(names)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


_SMOKE = dict(image_size=32, ndf=8, n_rkhs=64, n_depth=1, train_size=256, test_size=128,
              batch_size=32, epochs=2, warmup_steps=4, milestones=(), log_every=1)
_DEMO = dict(image_size=32, ndf=32, n_rkhs=256, n_depth=2, train_size=6000, test_size=2000,
             batch_size=64, epochs=6, warmup_steps=100, milestones=(5,), num_workers=1, log_every=10)
# The paper's CIFAR-scale model (official code: ndf 128, n_rkhs 1024, n_depth 3 at 32 px).
_PAPER_32 = dict(image_size=32, ndf=128, n_rkhs=1024, n_depth=3, batch_size=200, epochs=300,
                 milestones=(250, 280), warmup_steps=500, num_workers=4, log_every=50)

PRESETS: dict[str, dict[str, dict]] = {
    "shapes": {"smoke": _SMOKE, "demo": _DEMO, "paper": dict(_PAPER_32, train_size=50_000, test_size=10_000)},
    "folder": {"smoke": dict(_SMOKE, train_size=None, test_size=None), "demo": dict(_DEMO, train_size=None, test_size=None),
               "paper": _PAPER_32},
}


def get_config(dataset: str = "shapes", preset: str = "demo", **overrides) -> Config:
    """The configuration of `preset` for `dataset`, with keyword overrides applied last."""
    if dataset not in PRESETS:
        raise ValueError(f"unknown data set {dataset!r}; choose one of {sorted(PRESETS)}")
    if preset not in PRESETS[dataset]:
        raise ValueError(f"unknown preset {preset!r} for {dataset}; choose one of {sorted(PRESETS[dataset])}")
    return Config(dataset=dataset, **PRESETS[dataset][preset]).replace(**overrides)
