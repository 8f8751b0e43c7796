"""Every named size in one place: configurations `smoke` (seconds, for tests), `demo` (CPU minutes) and
`paper` per data set, the encoder sizes they and the benchmarks share (`MODEL_SIZES`), and what each
notebook computes at each preset (`workbook_sizes`).

A configuration is a flat dataclass so that it prints, saves into checkpoints and overrides from the
command line (`--set key=value`) without any framework.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from ..core.encoder import IMAGE_SIZES, local_width
from ..core.mixture import DEFAULT_ALPHA, DEFAULT_TAU
from ..core.objectives import TASKS
from ..core.views import LEVELS, NORMALISATION, STRONG_POLICIES, VIEW_POLICIES, normalisation_for
from ..data.datasets import shorten

PRESETS_NAMES = ("smoke", "demo", "paper")
# torch.compile's modes; reduce-overhead replays the encoder's kernels as CUDA graphs (on a GPU: for
# small models whose step is bound by kernel launches; on a CPU it compiles like the default).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# Configuration keys that say where and how a run executes, not what it computes (a run may resume,
# or a finished result be reused, with other values of these).
EXECUTION_KEYS = ("device", "num_workers", "download", "compile", "compile_mode", "channels_last",
                  "matmul_convolutions")
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
    normalise: str | None = None         # input statistics (views.NORMALISATION): None, the data set's own; an
                                         # encoder evaluated on other data keeps the statistics it was trained with
    batch_views: bool = True             # views computed per batch on the training device (amdim_lib.data.batched_views);
                                         # False: per image with PIL in the data loader (any policy, any image size)
    download: bool = False               # CIFAR-10/100, STL-10: download into data_dir when missing (never otherwise)
    skip_bad_images: bool = False        # image folders: skip (and count) unreadable files instead of failing
    # encoder
    ndf: int = 128
    n_rkhs: int = 1024
    n_depth: int = 3
    use_bn: bool = False
    bn_per_view: bool = True             # batch norm statistics per view, as the official code's separate passes;
                                         # False: both views share them (one batch of 2B)
    probe_dropout: float = 0.2           # dropout of the online MLP probe (as in the paper)
    # objective
    tclip: float | None = 20.0
    reg_weight: float = 0.05
    tasks: tuple[str, ...] = TASKS
    mixture_k: int = 0                   # mixture components that replace the 1t7 task (0: off; amdim_lib.core.mixture)
    mixture_tau: float = DEFAULT_TAU     # temperature of the mixture's assignments q = softmax(tau * s)
    mixture_alpha: float = DEFAULT_ALPHA  # weight of the entropy bonus alpha * H(q) (amdim_lib.core.mixture: why these)
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
    amp: str = "auto"                    # auto (CUDA: bf16/fp16; CPU: bf16 where measured faster) | bf16 | fp16 | off
    channels_last: bool = True           # NHWC activations: faster convolutions on CPUs (oneDNN) and tensor cores
    matmul_convolutions: bool = True     # the convolutions measured faster as matmuls run as matmuls (run.speed);
                                         # False: every convolution is nn.Conv2d's (the same result)
    compile: bool = False                # torch.compile the encoder (slow first steps, faster after; CUDA mostly)
    compile_mode: str = "default"        # torch.compile's mode: default | reduce-overhead (CUDA graphs) | max-autotune
    num_workers: int = 0
    log_every: int = 10                  # steps between lines of metrics.jsonl
    eval_every: int = 1                  # epochs between evaluations of the online probes
    checkpoint_every: int = 0            # steps between checkpoints (0: at the end of each epoch only)
    keep_checkpoints: int = 2            # how many past checkpoints stay in <run>/checkpoints/
    on_nonfinite: str = "stop"           # stop | skip: what a NaN/inf loss or gradient does

    def __post_init__(self):
        # Check everything before any work starts; each message names the allowed values.
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
        need(self.normalise is None or self.normalise in NORMALISATION,
             f"normalise={self.normalise!r}; None (the data set's own) or one of {sorted(NORMALISATION)}")
        need(self.policy is None or self.policy in VIEW_POLICIES,
             f"policy={self.policy!r}; None (by image size) or one of {VIEW_POLICIES}")
        need(not (self.batch_views and self.policy in STRONG_POLICIES),
             f"policy={self.policy!r} has no batched form; set batch_views=False to use it")
        need(bool(self.tasks) and all(isinstance(task, str) for task in self.tasks) and set(self.tasks) <= set(TASKS),
             f"tasks={self.tasks}; a non-empty subset of {TASKS}")
        need(self.mixture_k >= 0 and (self.mixture_k == 0 or "1t7" in self.tasks),
             f"mixture_k={self.mixture_k}; 0 (off) or a number of components, with 1t7 in tasks (the mixture replaces it)")
        need(self.mixture_tau > 0 and self.mixture_hidden >= 0,
             f"mixture_tau={self.mixture_tau}, mixture_hidden={self.mixture_hidden}; tau > 0 and hidden >= 0 (0: n_rkhs)")
        need(self.amp in ("auto", "bf16", "fp16", "off"), f"amp={self.amp!r}; choose auto, bf16, fp16 or off")
        need(self.tclip is None or self.tclip > 0, f"tclip={self.tclip}; a positive number or None (no clipping)")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            need(value is None or value >= 1, f"{name}={value}; a positive count or None")
        need(self.compile_mode in COMPILE_MODES, f"compile_mode={self.compile_mode!r}; choose {', '.join(COMPILE_MODES)}")
        need(self.compile or self.compile_mode == "default",
             f"compile_mode={self.compile_mode!r} does nothing without compile=True; set compile=True, or compile_mode=default")
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

    def changes_to(self, other: "Config") -> str:
        """What `other` computes differently, as 'key old -> new, ...' (empty when nothing does)."""
        mine, theirs = self.outcome(), other.outcome()
        return ", ".join(f"{key} {mine[key]!r} -> {theirs[key]!r}" for key in theirs if mine[key] != theirs[key])

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def normalisation_name(self) -> str:
        """The views.NORMALISATION entry this run's inputs are normalised with."""
        return self.normalise or normalisation_for(self.dataset)

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel that this run's inputs are normalised with."""
        return NORMALISATION[self.normalisation_name()]

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        if not isinstance(values, dict):
            raise ValueError(f"a configuration is a dict of settings (as config.json holds), got a "
                             f"{type(values).__name__}: {shorten(repr(values), 80)}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}; known keys: {sorted(names)}")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
        # A run saved before per-view batch norm existed shared the statistics of both views: say so, so
        # that such a run is never resumed or reused as if it had been trained per view.
        values.setdefault("bn_per_view", False)
        values.setdefault("normalise", "default")  # likewise: every input was normalised with 0.5 / 0.5 then
        return cls(**values)


# Encoder sizes by name (ndf, n_rkhs, n_depth), shared by the presets, the notebooks and the benchmarks.
MODEL_SIZES = {
    "smoke": dict(ndf=8, n_rkhs=64, n_depth=1),           # runs in seconds; learns next to nothing
    "small": dict(ndf=16, n_rkhs=128, n_depth=1),         # a few hundred CPU updates show a trend (notebooks 03, 07)
    "demo": dict(ndf=32, n_rkhs=256, n_depth=2),          # learns visibly in CPU minutes
    # The paper's and the official code's models (paper, Sec. 4 and appendix; official README and train.py):
    "official": dict(ndf=128, n_rkhs=1024, n_depth=3),    # the official code's default: the paper's small CIFAR model
    "cifar": dict(ndf=320, n_rkhs=1280, n_depth=10),      # the paper's CIFAR-10 / CIFAR-100 model
    "stl10": dict(ndf=192, n_rkhs=1536, n_depth=8),       # the paper's STL-10 model
    "imagenet": dict(ndf=320, n_rkhs=2560, n_depth=10),   # the released AMDIM-Large: 68.1% on ImageNet (official README)
    "imagenet-256": dict(ndf=256, n_rkhs=2048, n_depth=10),  # the released AMDIM-Medium ("67%+", official README)
    "imagenet-192": dict(ndf=192, n_rkhs=1536, n_depth=8),  # the official README's ImageNet training command
}


def model_size_name(config) -> str | None:
    """The MODEL_SIZES name of `config`'s encoder (a Config or its dict), or None for any other size."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key)
    sizes = {key: get(key) for key in ("ndf", "n_rkhs", "n_depth")}
    return next((name for name, size in MODEL_SIZES.items() if size == sizes), None)

_SMOKE = dict(image_size=32, **MODEL_SIZES["smoke"], train_size=256, test_size=128,
              batch_size=32, epochs=2, warmup_steps=4, milestones=(), log_every=1)
# demo: about 1,000 updates of a model that learns visibly, so that the whole workbook runs on a laptop's
# CPU. A learning rate above the paper's 2e-4 (with a short warm-up), because at a budget this short the
# paper's rate leaves the linear probe markedly lower. Data loading stays in the main process: with few
# cores a loader worker competes with the compute threads, and the views are computed per batch on the
# training device (batch_views), which costs little.
_DEMO = dict(image_size=32, **MODEL_SIZES["demo"], train_size=6000, test_size=2000,
             batch_size=64, epochs=11, lr=1e-3, warmup_steps=50, milestones=(9,), num_workers=0, log_every=10)
# Photographs (CIFAR subsets, image folders): 10,000 training images, 156 updates an epoch. Photographs need
# a longer run than Shapes to show what AMDIM learns: 15 epochs (2,340 updates) fit the 10 minutes a demo may
# train on a 2-core CPU in float32 (0.25 s an update at AVX2 with the data pipeline, `bench`); the rate falls x0.2
# for the last 3. Chosen on a validation split of the training images (benchmarks/LOG.md, "Photograph recipe").
# Measured: amdim_lib/analysis/photo_result.json (benchmarks/photo_recipe.py).
_DEMO_10K = dict(_DEMO, train_size=10_000, test_size=2_000, epochs=15, milestones=(12,))
# The paper's CIFAR-scale model on the official code's default schedule.
_PAPER_32 = dict(image_size=32, **MODEL_SIZES["official"], batch_size=200, epochs=300,
                 milestones=(250, 280), warmup_steps=500, num_workers=4, log_every=50)

PRESETS: dict[str, dict[str, dict]] = {
    "shapes": {"smoke": _SMOKE, "demo": _DEMO, "paper": dict(_PAPER_32, train_size=50_000, test_size=10_000)},
    "folder": {"smoke": dict(_SMOKE, train_size=None, test_size=None), "demo": dict(_DEMO_10K, train_size=None, test_size=None),
               "paper": _PAPER_32},
}


def _at(preset: dict, image_size: int, **changes) -> dict:
    """`preset` at another image size, n_rkhs raised to the local feature width there when below it."""
    out = dict(preset, image_size=image_size, **changes)
    out["n_rkhs"] = max(out["n_rkhs"], local_width(image_size, out["ndf"]))
    return out


# Real data sets: smoke = a few hundred of the real images (seconds), demo = a subset for CPU minutes,
# paper = the paper's configuration (a GPU; full splits). train_size/test_size pick a seeded subset.
# The paper's schedule for CIFAR and STL-10 (and the official code's defaults): batch 200, Adam lr 2e-4,
# 300 epochs with lr x0.2 at epochs 250 and 280, a 500-update warm-up, tclip 20.
_PAPER = dict(batch_size=200, epochs=300, milestones=(250, 280), warmup_steps=500, tclip=20.0, num_workers=8,
              log_every=50, train_size=None, test_size=None)
# ImageNet at 128 px: the released AMDIM-Large on the longer schedule the official code recommends for its
# best results (100 epochs, x0.2 at 60 and 90); paper-256: the released AMDIM-Medium's size; paper-192:
# the official README's command (batch 480) on the code's default ImageNet schedule (50 epochs, x0.2 at 30
# and 45). All use mixed precision on CUDA (amp=auto). ImageNet photographs come in every size: their random
# resized crops are cut per image from the whole photograph (batch_views=False), not from a fitted square.
_PAPER_128 = dict(_PAPER, image_size=128, **MODEL_SIZES["imagenet"], epochs=100, milestones=(60, 90),
                  num_workers=12, batch_views=False)
_IMAGENET_LIKE = {
    "smoke": _at(_SMOKE, 128, batch_views=False),
    "demo": _at(_DEMO, 128, train_size=2000, test_size=1000, batch_views=False),
    "paper": _PAPER_128,
    "paper-256": dict(_PAPER_128, **MODEL_SIZES["imagenet-256"]),
    "paper-192": dict(_PAPER_128, **MODEL_SIZES["imagenet-192"], batch_size=480, epochs=50, milestones=(30, 45)),
}
_CIFAR = {"smoke": _SMOKE, "demo": _DEMO_10K, "paper": dict(_PAPER, image_size=32, **MODEL_SIZES["cifar"]),
          "paper-small": dict(_PAPER, image_size=32, **MODEL_SIZES["official"])}
PRESETS.update({
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    # STL-10 trains on train+unlabeled (105k images), its probes on the 5k labelled train images.
    "stl10": {"smoke": _at(_SMOKE, 64), "demo": _at(_DEMO, 64, train_size=4000, test_size=2000),
              "paper": dict(_PAPER, image_size=64, **MODEL_SIZES["stl10"])},
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


# What each notebook computes at each preset: the sizes of its figures, statistics and short runs.
WORKBOOK_SIZES: dict[str, dict[str, dict]] = {
    # 01 views: view pairs per image in the grids, samples per augmentation, pairs behind each statistic,
    # photographs and shapes shown.
    "01": {
        "smoke": dict(n_pairs=2, n_samples=3, n_stat_pairs=4, n_photos=2, n_shapes=1),
        "demo": dict(n_pairs=4, n_samples=6, n_stat_pairs=8, n_photos=5, n_shapes=2),
        "paper": dict(n_pairs=6, n_samples=8, n_stat_pairs=64, n_photos=5, n_shapes=3),
    },
    # 03 objective: images in the illustrated batch, and the short training run (a base preset plus
    # overrides). The smoke and demo runs use lr 1e-3 with a short warm-up so that a few dozen updates
    # show a trend, as 04's demo run does (lr 1e-3, 50 warm-up steps); the paper's schedule (lr 2e-4, 500
    # warm-up steps) belongs to the paper preset.
    "03": {
        "smoke": dict(batch=8, train=dict(base="smoke", train_size=128, test_size=32, batch_size=16, epochs=2,
                                          warmup_steps=1, lr=1e-3, log_every=1)),
        "demo": dict(batch=12, train=dict(base="smoke", **MODEL_SIZES["small"], train_size=3200, test_size=256,
                                          batch_size=32, epochs=1, warmup_steps=10, lr=1e-3, log_every=4)),
        "paper": dict(batch=16, train=dict(base="paper", epochs=1, log_every=5)),
    },
    # 05 evaluation: probe_train / probe_test: images of each split whose features the probes use (None:
    # the run's whole splits); label_counts: labelled images per class for the label-efficiency curve;
    # supervised_fraction: the supervised baseline's share of the self-supervised run's updates (1.0 = the
    # same budget), at most supervised_max_steps. At demo the evaluation stays within CPU minutes: the
    # raw-pixel probe fits only its winning C (3,072 inputs make each fit slow) and the supervised baseline
    # gets a quarter of AMDIM's updates.
    "05": {
        "smoke": dict(probe_train=256, probe_test=128, label_counts=(1, 4, 16), repeats=3, tsne_points=300,
                      mlp_hidden=64, supervised_fraction=1.0, supervised_max_steps=16, pixel_Cs=(0.01, 0.1, 1.0)),
        "demo": dict(probe_train=2000, probe_test=1000, label_counts=(1, 4, 16, 64), repeats=3, tsne_points=800,
                     mlp_hidden=128, supervised_fraction=0.25, supervised_max_steps=150, pixel_Cs=(0.01,)),
        "paper": dict(probe_train=None, probe_test=None, label_counts=(1, 4, 16, 64, 256, 1024), repeats=5,
                      tsne_points=2000, mlp_hidden=1024, supervised_fraction=1.0, supervised_max_steps=None,
                      pixel_Cs=(0.01, 0.1, 1.0)),
    },
    # 06 ablations, and the command line's sweep: updates per run (None: the configuration's own schedule),
    # the default variants (names of amdim_lib.analysis.sweep.VARIANTS, or "all") and seeds, and how many images the
    # probes use (None: the whole split). Three AMDIM configurations form a small factorial design:
    # full -> single_scale removes multiscale prediction, single_scale -> dim_baseline then removes
    # augmentation, beside the untrained encoder (and the supervised baseline at smoke). The demo budget
    # keeps it within CPU minutes, far from converged: its table can show the direction of large effects
    # only, and the notebook says when it cannot. More variants or updates are one parameter away in the
    # notebook.
    "06": {
        "smoke": dict(steps=8, variants=("full", "dim_baseline", "supervised", "random_init"), n_seeds=2,
                      probe_train=256, probe_test=128),
        # 200 updates: on the upright Shapes (2026-12-07, float32 at AVX2, 2 seeds) every comparison clears the
        # spread: full 46.1 +- 1.6 against single scale 32.1 +- 5.0, local DIM 24.6 +- 0.8 and the untrained
        # encoder 17.0 +- 7.3 (benchmarks/README.md, "Ablations"). The supervised baseline is notebook 05's.
        "demo": dict(steps=200, variants=("full", "single_scale", "dim_baseline", "random_init"),
                     n_seeds=2, probe_train=1000, probe_test=1000),
        "paper": dict(steps=None, variants=("all",), n_seeds=3, probe_train=None, probe_test=None),
    },
    # 07 mixture segmentation: the model and its training (a base preset plus overrides, and a number of
    # updates), the components of the ablation, and the evaluation sizes (Shapes test images scored,
    # images in the negative bank, sub-stride shifts of the dense maps, train/test images of the linear
    # probe, images shown).
    "07": {
        "smoke": dict(base="smoke", model=dict(train_size=256, test_size=64, batch_size=32, warmup_steps=2, lr=1e-3,
                                               milestones=(), augment="crop"),
                      steps=4, ks=(2, 4, 8), eval_images=12, bank=16, shifts=2, probe=(200, 100), show=6),
        "demo": dict(base="smoke", model=dict(**MODEL_SIZES["small"], train_size=4000, test_size=256,
                                              batch_size=64, warmup_steps=20, lr=1e-3, milestones=(), augment="crop",
                                              num_workers=1, log_every=10),
                     steps=250, ks=(2, 4, 8), eval_images=96, bank=64, shifts=4, probe=(2000, 1000), show=10),
        "paper": dict(base="paper", model=dict(augment="crop"), steps=None, ks=(2, 4, 8), eval_images=1000, bank=200,
                      shifts=4, probe=(10_000, 2_000), show=10),
    },
    # A2 engineering: one short run trained twice, straight through and interrupted then resumed (a base
    # preset plus overrides), stopped after `stop_at` updates, mid-epoch.
    # 02 bounds and appendix A1: critic updates per MI level of the staircase (equal phases, one per level).
    "02": {"smoke": dict(steps_per_level=60), "demo": dict(steps_per_level=500), "paper": dict(steps_per_level=4000)},
    "A1": {"smoke": dict(steps_per_level=30), "demo": dict(steps_per_level=200), "paper": dict(steps_per_level=4000)},
    "A2": {
        "smoke": dict(train=dict(base="smoke", train_size=64, test_size=32, batch_size=16, epochs=2), stop_at=3),
        "demo": dict(train=dict(base="smoke", train_size=256, test_size=64, batch_size=32, epochs=2), stop_at=11),
        "paper": dict(train=dict(base="smoke", train_size=256, test_size=64, batch_size=32, epochs=2), stop_at=11),
    },
}


def workbook_sizes(notebook: str, preset: str) -> dict:
    """What notebook `notebook` ("01", ..., "07", "A2") computes at `preset`; the paper variants (paper-192, ...)
    use the paper's sizes. A fresh copy: changing it changes nothing here."""
    if notebook not in WORKBOOK_SIZES:
        raise ValueError(f"no sizes for notebook {notebook!r}; notebooks with sizes: {sorted(WORKBOOK_SIZES)}")
    if preset not in preset_names():
        raise ValueError(f"unknown preset {preset!r}; choose one of {preset_names()}")
    sizes = WORKBOOK_SIZES[notebook]
    return copy.deepcopy(sizes.get(preset, sizes["paper"]))


# The notebooks' parameters (their first cell, which papermill -p overrides) that are not configuration
# fields: what each may hold, as (description, check).
NOTEBOOK_PARAMETERS = {
    "output_dir": ("a folder path", lambda v: isinstance(v, str) and bool(v)),
    "train_dir": ("a run folder or a checkpoint file", lambda v: isinstance(v, str) and bool(v)),
    "checkpoint": ("None or an encoder checkpoint file (this project's or an official one)",
                   lambda v: v is None or (isinstance(v, str) and bool(v))),
    "cifar_dir": ("None or a folder path", lambda v: v is None or (isinstance(v, str) and bool(v))),
    "resume": ("True or False", lambda v: isinstance(v, bool)),
    "retrain": ("True or False", lambda v: isinstance(v, bool)),
    "critic": ("'separable' or 'concat'", lambda v: v in ("separable", "concat")),
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
