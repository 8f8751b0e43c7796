"""Named configurations: `smoke` (seconds, for tests), `demo` (CPU minutes) and `paper` per data set.

A configuration is a flat dataclass so that it prints, saves into checkpoints and overrides from the
command line (`--set key=value`) without any framework.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .objectives import TASKS

PRESETS_NAMES = ("smoke", "demo", "paper")
# Configuration keys that say where and how a run executes, not what it computes (a run may resume,
# or a finished result be reused, with other values of these).
EXECUTION_KEYS = ("device", "num_workers", "download", "compile", "channels_last")
_INFINITY = float("inf")
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
    policy: str | None = None            # view policy; None: by image size (cifar 32, stl10 64, imagenet 128);
                                         # imagenet-randaugment | -trivialaugment | -autoaugment: stronger, for ImageNet
    batch_views: bool = True             # views computed per batch on the training device (amdim_lib.batched_views);
                                         # False: per image with PIL in the data loader (any policy, any image size)
    download: bool = False               # CIFAR-10/100, STL-10: download into data_dir when missing (never otherwise)
    skip_bad_images: bool = False        # image folders: skip (and count) unreadable files instead of failing
    # encoder
    ndf: int = 128
    n_rkhs: int = 1024
    n_depth: int = 3
    use_bn: bool = False
    probe_dropout: float = 0.2           # dropout of the online MLP probe (as in the paper)
    # objective
    tclip: float | None = 20.0
    reg_weight: float = 0.05
    tasks: tuple[str, ...] = TASKS
    mixture_k: int = 0                   # mixture components that replace the 1t7 task (0: off; amdim_lib.mixture)
    mixture_tau: float = 1.0             # temperature of the mixture's assignments q = softmax(tau * s)
    mixture_alpha: float = 0.1           # weight of the entropy bonus alpha * H(q) (amdim_lib.mixture: why these)
    mixture_hidden: int = 0              # hidden width of the mixture head (0: n_rkhs)
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
    channels_last: bool = True           # NHWC activations: faster convolutions on CPUs (oneDNN) and tensor cores
    compile: bool = False                # torch.compile the encoder (slow first steps, faster after; CUDA mostly)
    num_workers: int = 0
    log_every: int = 10                  # steps between lines of metrics.jsonl
    eval_every: int = 1                  # epochs between evaluations of the online probes
    checkpoint_every: int = 0            # steps between checkpoints (0: at the end of each epoch only)
    keep_checkpoints: int = 2            # how many past checkpoints stay in <run>/checkpoints/
    on_nonfinite: str = "stop"           # stop | skip: what a NaN/inf loss or gradient does

    def __post_init__(self):
        # Check everything before any work starts; each message names the allowed values.
        from .encoder import IMAGE_SIZES, local_width
        from .views import LEVELS, STRONG_POLICIES, VIEW_POLICIES

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
        need(self.policy is None or self.policy in VIEW_POLICIES,
             f"policy={self.policy!r}; None (by image size) or one of {VIEW_POLICIES}")
        need(not (self.batch_views and self.policy in STRONG_POLICIES),
             f"policy={self.policy!r} has no batched form; set batch_views=False to use it")
        need(bool(self.tasks) and set(self.tasks) <= set(TASKS), f"tasks={self.tasks}; a non-empty subset of {TASKS}")
        need(self.mixture_k >= 0 and (self.mixture_k == 0 or "1t7" in self.tasks),
             f"mixture_k={self.mixture_k}; 0 (off) or a number of components, with 1t7 in tasks (the mixture replaces it)")
        need(self.mixture_tau > 0 and self.mixture_hidden >= 0,
             f"mixture_tau={self.mixture_tau}, mixture_hidden={self.mixture_hidden}; tau > 0 and hidden >= 0 (0: n_rkhs)")
        need(self.amp in ("auto", "bf16", "fp16", "off"), f"amp={self.amp!r}; choose auto, bf16, fp16 or off")
        need(self.tclip is None or self.tclip > 0, f"tclip={self.tclip}; a positive number or None (no clipping)")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            need(value is None or value >= 1, f"{name}={value}; a positive count or None")
        need(self.on_nonfinite in ("stop", "skip"), f"on_nonfinite={self.on_nonfinite!r}; choose stop or skip")
        need(self.keep_checkpoints >= 1, f"keep_checkpoints={self.keep_checkpoints}; must be >= 1")
        need(self.num_workers >= 0 and self.log_every >= 1 and self.eval_every >= 1 and self.checkpoint_every >= 0,
             "num_workers, checkpoint_every must be >= 0 and log_every, eval_every >= 1")
        self._check_values(need)

    def _check_values(self, need) -> None:
        """Values a run would accept but compute nonsense with, or fail on only later."""
        kind, _, index = self.device.partition(":")
        need(self.device in ("auto", "cpu", "mps", "cuda") or (kind == "cuda" and index.isdigit()),
             f"device={self.device!r}; choose auto, cpu, cuda, cuda:N (N: a GPU index) or mps")
        need(len(set(self.tasks)) == len(self.tasks),
             f"tasks={self.tasks} names a task twice (its term would count double); name each task once")
        for name in ("lr", "eps", "weight_decay", "gamma", "reg_weight", "probe_dropout", "mixture_tau",
                     "mixture_alpha", "tclip"):
            value = getattr(self, name)
            need(value is None or -_INFINITY < value < _INFINITY, f"{name}={value}; must be a finite number")
        need(0 < self.gamma <= 1, f"gamma={self.gamma}; the factor of the learning rate at each milestone, in (0, 1]")
        need(self.eps > 0 and min(self.weight_decay, self.reg_weight, self.mixture_alpha) >= 0,
             f"eps={self.eps}, weight_decay={self.weight_decay}, reg_weight={self.reg_weight}, "
             f"mixture_alpha={self.mixture_alpha}; eps > 0 and the others >= 0")
        need(0 <= self.probe_dropout < 1, f"probe_dropout={self.probe_dropout}; a probability in [0, 1)")
        need(0 <= self.seed < 2**32, f"seed={self.seed}; an integer in [0, 2**32)")

    def outcome(self) -> dict:
        """The values that decide what a run computes: everything but `EXECUTION_KEYS`."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_KEYS}

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
# demo: about 1,000 updates of the official small model, ~8 CPU minutes on 2 cores. A higher learning
# rate than the paper's 2e-4 (with a short warm-up) learns markedly faster at this short budget
# (Shapes, linear probe after 279 updates: 24.3% at 1e-3 against 22.3% at 2e-4; 29.3% after 651 at 1e-3).
# Data loading stays in the main process: on 2 cores a worker fights the two compute threads
# (measured 0.46 s/step without a worker, 3.1 s/step with one); the views are computed per batch
# (batch_views), a few milliseconds a step.
_DEMO = dict(image_size=32, ndf=32, n_rkhs=256, n_depth=2, train_size=6000, test_size=2000,
             batch_size=64, epochs=11, lr=1e-3, warmup_steps=50, milestones=(9,), num_workers=0, log_every=10)
# 10,000 training images (CIFAR subsets, image folders): 156 updates an epoch, so 6 epochs for ~940.
_DEMO_10K = dict(_DEMO, train_size=10_000, test_size=2_000, epochs=6, milestones=(5,))
# The paper's CIFAR-scale model (official code: ndf 128, n_rkhs 1024, n_depth 3 at 32 px).
_PAPER_32 = dict(image_size=32, ndf=128, n_rkhs=1024, n_depth=3, batch_size=200, epochs=300,
                 milestones=(250, 280), warmup_steps=500, num_workers=4, log_every=50)

PRESETS: dict[str, dict[str, dict]] = {
    "shapes": {"smoke": _SMOKE, "demo": _DEMO, "paper": dict(_PAPER_32, train_size=50_000, test_size=10_000)},
    "folder": {"smoke": dict(_SMOKE, train_size=None, test_size=None), "demo": dict(_DEMO_10K, train_size=None, test_size=None),
               "paper": _PAPER_32},
}


def _at(preset: dict, image_size: int, **changes) -> dict:
    """`preset` at another image size, n_rkhs raised to the local feature width there when below it."""
    from .encoder import local_width
    out = dict(preset, image_size=image_size, **changes)
    out["n_rkhs"] = max(out["n_rkhs"], local_width(image_size, out["ndf"]))
    return out


# Real data sets: smoke = a few hundred of the real images (seconds), demo = a subset for CPU minutes,
# paper = the paper's configuration (a GPU; full splits). train_size/test_size pick a seeded subset.
# CIFAR-10/100 and STL-10, the paper's large model: ndf 256, n_rkhs 2048, n_depth 10, batch 480,
# 300 epochs with lr x0.2 at epochs 250 and 280, tclip 20 (the official code's schedule for them).
_PAPER_LARGE = dict(ndf=256, n_rkhs=2048, n_depth=10, batch_size=480, epochs=300, milestones=(250, 280),
                    warmup_steps=500, tclip=20.0, num_workers=8, log_every=50, train_size=None, test_size=None)
# ImageNet at 128 px. paper: the model behind the 68.1% (ndf 320, n_rkhs 2560, n_depth 10) on the longer
# schedule the official code recommends for its best results (100 epochs, x0.2 at 60 and 90);
# paper-256: the intermediate width (n_rkhs 2048; depth 10 assumed as in the large model);
# paper-192: the official README's command (ndf 192, n_rkhs 1536, n_depth 8, batch 480) on the code's
# default ImageNet schedule (50 epochs, x0.2 at 30 and 45). All use mixed precision on CUDA (amp=auto).
# ImageNet photographs come in every size: their random resized crops are cut per image from the whole
# photograph (batch_views=False), not from a fitted square (see amdim_lib.batched_views).
_PAPER_128 = dict(_PAPER_LARGE, image_size=128, ndf=320, n_rkhs=2560, n_depth=10, epochs=100, milestones=(60, 90),
                  num_workers=12, batch_views=False)
_IMAGENET_LIKE = {
    "smoke": _at(_SMOKE, 128, batch_views=False),
    "demo": _at(_DEMO, 128, train_size=2000, test_size=1000, batch_views=False),
    "paper": _PAPER_128,
    "paper-256": dict(_PAPER_128, ndf=256, n_rkhs=2048),
    "paper-192": dict(_PAPER_128, ndf=192, n_rkhs=1536, n_depth=8, epochs=50, milestones=(30, 45)),
}
PRESETS.update({
    "cifar10": {"smoke": _SMOKE, "demo": _DEMO_10K,
                "paper": dict(_PAPER_LARGE, image_size=32)},
    "cifar100": {"smoke": _SMOKE, "demo": _DEMO_10K,
                 "paper": dict(_PAPER_LARGE, image_size=32)},
    # STL-10 trains on train+unlabeled (105k images), its probes on the 5k labelled train images.
    "stl10": {"smoke": _at(_SMOKE, 64), "demo": _at(_DEMO, 64, train_size=4000, test_size=2000),
              "paper": dict(_PAPER_LARGE, image_size=64)},
    "imagenet": _IMAGENET_LIKE,
    "places205": _IMAGENET_LIKE,  # self-supervised on Places205; the paper's 55.0 is ImageNet -> Places205 transfer
})


def preset_names() -> tuple[str, ...]:
    """Every preset name of any data set: smoke, demo, paper first, then the variants (paper-192, ...)."""
    extra = sorted({name for presets in PRESETS.values() for name in presets} - set(PRESETS_NAMES))
    return PRESETS_NAMES + tuple(extra)


def get_config(dataset: str = "shapes", preset: str = "demo", **overrides) -> Config:
    """The configuration of `preset` for `dataset`, with keyword overrides applied last."""
    if dataset not in PRESETS:
        raise ValueError(f"unknown data set {dataset!r}; choose one of {sorted(PRESETS)}")
    if preset not in PRESETS[dataset]:
        raise ValueError(f"unknown preset {preset!r} for {dataset}; choose one of {sorted(PRESETS[dataset])}")
    return Config(dataset=dataset, **PRESETS[dataset][preset]).replace(**overrides)


# The notebooks' parameters (their first cell, which papermill -p overrides) that are not configuration
# fields: what each may hold, as (description, check).
NOTEBOOK_PARAMETERS = {
    "output_dir": ("a folder path", lambda v: isinstance(v, str) and bool(v)),
    "train_dir": ("a folder path", lambda v: isinstance(v, str) and bool(v)),
    "cifar_dir": ("None or a folder path", lambda v: v is None or (isinstance(v, str) and bool(v))),
    "resume": ("True or False", lambda v: isinstance(v, bool)),
    "retrain": ("True or False", lambda v: isinstance(v, bool)),
    "threads": ("None or a number of threads >= 1", lambda v: v is None or (_is_int(v) and v >= 1)),
    "steps": ("None or a number of updates >= 1", lambda v: v is None or (_is_int(v) and v >= 1)),
    "seeds": ("None or a list of seeds (integers >= 0)",
              lambda v: v is None or (isinstance(v, (list, tuple)) and bool(v) and all(_is_int(s) and s >= 0 for s in v))),
    "variants": ("None, 'all', or variant names (a name or a list of names)",
                 lambda v: v is None or isinstance(v, str) or (isinstance(v, (list, tuple)) and bool(v)
                                                               and all(isinstance(name, str) for name in v))),
}
# Notebook parameters that set a configuration field under a shorter name.
NOTEBOOK_FIELDS = {"k": "mixture_k", "tau": "mixture_tau", "alpha": "mixture_alpha"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_notebook_parameters(dataset: str = "shapes", preset: str = "demo", **parameters) -> None:
    """Check a notebook's parameters before any work, with the command line's one-line messages.

    Configuration fields (seed, device, data_dir, ...; k, tau and alpha for mixture_k, mixture_tau and
    mixture_alpha) are checked by Config on the preset's configuration, as `--set KEY=VALUE` is; the
    others against NOTEBOOK_PARAMETERS. An unknown name is an error too. Raises ValueError.
    """
    fields = {f.name for f in dataclasses.fields(Config)} - {"dataset"}
    base = get_config(dataset, preset)
    for name, value in parameters.items():
        field = NOTEBOOK_FIELDS.get(name, name)
        if field in fields:
            try:
                base.replace(**{field: value})
            except (ValueError, TypeError) as error:
                alias = f" (notebook parameter {name})" if field != name else ""
                raise ValueError(f"{error}{alias}") from None
        elif name in NOTEBOOK_PARAMETERS:
            allowed, ok = NOTEBOOK_PARAMETERS[name]
            if not ok(value):
                raise ValueError(f"invalid notebook parameter: {name}={value!r}; {allowed}")
        else:
            raise ValueError(f"unknown notebook parameter {name!r}; known: dataset, preset, "
                             f"{', '.join(sorted(NOTEBOOK_PARAMETERS) + sorted(NOTEBOOK_FIELDS))} and the "
                             "configuration fields")
