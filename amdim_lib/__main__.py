"""Command line: python -m amdim_lib {train, eval, bench, sweep, demo, reproduce} --help"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import signal
import statistics
import sys
from pathlib import Path

from .bench import (bench_against_official, bench_data, bench_end_to_end, bench_speed_rules, bench_training,
                    machine_summary, over_epochs, profile_step)
from .run.build import select_device
from .run.speed import autocast_dtype, execution_summary
from .run.checkpoints import atomic_write, save_json
from .data.datasets import fetch, shorten
from .analysis.evaluate import evaluate_encoder, probe_table
from .run.memory import check_fits
from .official import load_encoder
from .run.presets import PRESETS, Config, get_config, preset_names
from .run.runfolder import RunFolder, RunFolderError, checkpoint_identity, ensure_writable_folder
from .analysis.sweep import (SIGNIFICANCE_RULE, run_sweep, significant_differences, significant_names, steps_trained_now,
                    sweep_metrics, sweep_scale, sweep_table, table_markdown)
from .run.train import TrainingInterrupted, train
from .ui.workbook import NotebookError, run_workbook

EXAMPLES = """examples:
  python -m amdim_lib train --dataset shapes --preset demo --out runs/demo
  python -m amdim_lib train --dataset folder --data-dir ../shared/data/cifar10-subset --preset demo --out runs/cifar
  python -m amdim_lib train --dataset shapes --preset demo --set batch_size=128 --set tasks=1t7 --print-config
  python -m amdim_lib eval --checkpoint runs/demo/checkpoint.pt
  python -m amdim_lib download --dataset cifar10          (into data/cifar10/; or add --download to train)
  python -m amdim_lib train --dataset stl10 --preset paper --out runs/stl10
  python -m amdim_lib train --dataset imagenet --preset paper-192 --print-config
  python -m amdim_lib eval --checkpoint runs/imagenet/checkpoint.pt --dataset places205   (transfer)
  python -m amdim_lib bench --preset paper --batch-size 64
  python -m amdim_lib sweep --dataset shapes --preset demo --out runs/ablations --variants full single_scale dim_baseline
"""

MAX_SET_VALUE = 4096  # characters of one --set value (a data path is the longest sensible one)


def _parse_value(field: dataclasses.Field, text: str):
    def scalar(item: str):
        try:
            return ast.literal_eval(item)
        except (ValueError, SyntaxError):
            return item  # a bare word such as cpu or 1t7
    if isinstance(field.default, tuple) or "tuple" in str(field.type):
        whole = scalar(text)
        if isinstance(whole, (tuple, list)):
            if any(isinstance(item, (tuple, list, dict, set)) for item in whole):
                raise SystemExit(f"error: --set {field.name} takes a flat tuple such as {field.default}, got "
                                 f"{shorten(text, 80)!r}")
            return tuple(whole)
        return tuple(scalar(item) for item in text.strip("()[] ").split(",") if item.strip())
    return scalar(text)


def config_from_args(args) -> Config:
    """The preset's configuration, then --data-dir/--device, then each --set KEY=VALUE."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if key == "dataset":
            raise SystemExit("error: invalid configuration: choose the data set with --dataset, not --set dataset=...")
        if not sep or key not in fields:
            raise SystemExit(f"--set expects KEY=VALUE with KEY one of: {', '.join(fields)} (got {shorten(item, 80)!r})")
        if len(value) > MAX_SET_VALUE:
            raise SystemExit(f"error: --set {key}=... is {len(value):,} characters long; no setting takes more than "
                             f"{MAX_SET_VALUE} (a path, a number or a short tuple)")
        overrides[key] = _parse_value(fields[key], value)
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "device", None):
        overrides["device"] = args.device
    if getattr(args, "download", False):
        overrides["download"] = True
    if getattr(args, "batch_size", None) is not None:
        overrides["batch_size"] = args.batch_size
    try:
        return get_config(args.dataset, args.preset, **overrides)
    except (ValueError, TypeError) as error:
        raise SystemExit(f"error: {error}") from None


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="shapes", choices=sorted(PRESETS),
                   help="shapes: embedded procedural data (default, no files); folder: --data-dir with train/ and test/ "
                        "class folders; cifar10, cifar100, stl10 (torchvision files), imagenet, places205 (class folders): "
                        "read from data/<name>/ unless --data-dir says otherwise (layouts: data/README.md)")
    p.add_argument("--preset", default="demo", choices=preset_names(),
                   help="smoke: seconds (tests); demo: a few CPU minutes (default); paper: the paper's configuration "
                        "(GPU); imagenet/places205 also paper-256 and paper-192 (narrower encoders)")
    p.add_argument("--data-dir", help="root of the data set on disk (needed for --dataset folder; default data/<name>/)")
    p.add_argument("--download", action="store_true",
                   help="fetch a missing data set first (CIFAR-10/100, STL-10: network; ImageNet, Places205: unpack "
                        "archives already in the root); without it nothing is downloaded")
    p.add_argument("--device", help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one configuration value, e.g. --set epochs=3 --set tasks=1t5,1t7 (repeatable)")


def _device_or_exit(name: str):
    """The device `name` names; a clear exit when this machine has none such."""
    try:
        return select_device(name)
    except RuntimeError as error:
        raise SystemExit(f"error: {error}") from None


def cmd_train(args) -> dict:

    config = config_from_args(args)
    if args.print_config:
        mean, std = config.normalisation()  # resolved from the data set when `normalise` is None
        print(json.dumps({**config.to_dict(), "resolved_input_mean": mean, "resolved_input_std": std}, indent=2))
        return {}
    _device_or_exit(config.device)
    out = Path(args.out or f"runs/{config.dataset}-{args.preset}")
    print(f"training AMDIM on {config.dataset} ({args.preset} preset) into {out}" + (" (resuming)" if args.resume else ""))
    try:
        summary = train(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, FloatingPointError, RunFolderError) as error:
        raise SystemExit(f"error: {error}") from None
    if summary["interrupted"]:
        return summary
    print(f"done: {summary['steps']} steps in {summary['seconds']} s ({summary['images_per_s']} images/s); "
          f"online probes: {summary['eval']}")
    if args.evaluate:
        encoder, config = _encoder_or_exit(out / RunFolder.CHECKPOINT)
        results = evaluate_encoder(encoder, config, baselines=True)
        _write_report(out, config, args.preset, summary, results, checkpoint_identity(out / RunFolder.CHECKPOINT),
                      config.dataset)
    return summary


def _encoder_or_exit(path: Path):
    """The encoder and configuration of a checkpoint, or a one-line exit naming the file for every way
    it can be unusable (unreadable, entries missing, weights of other shapes, non-finite weights)."""
    try:
        return load_encoder(path)  # this project's run checkpoints and the official code's
    except (FileNotFoundError, ValueError) as error:  # each names the file
        raise SystemExit(f"error: {error}") from None


def _write_report(out: Path, config: Config, preset: str, summary: dict, results: dict, evaluated: dict,
                  trained_on: str) -> None:
    """eval.json, eval_info.json (what was evaluated: data sets, the checkpoint's hash and step, the preset)
    and report.md, each naming the checkpoint step it describes."""
    table = probe_table(results)
    save_json(out / RunFolder.EVAL, results)
    save_json(out / RunFolder.EVAL_INFO, {"dataset": config.dataset, "trained_on": trained_on, "preset": preset,
                                          **evaluated, "config": config.to_dict()})
    text = (f"# AMDIM on {config.dataset} ({preset} preset)\n\n"
            f"Encoder: {config.image_size} px, ndf {config.ndf}, n_rkhs {config.n_rkhs}, n_depth {config.n_depth}; "
            f"{summary.get('steps', '?')} steps of batch {config.batch_size}"
            + (f" in {summary['seconds']} s" if "seconds" in summary else "") + ".\n\n"
            f"Evaluated: {evaluated['checkpoint']} at step {evaluated['step']} (SHA-256 {evaluated['sha256'][:16]}).\n\n"
            "Frozen-feature evaluation on the test split (features r1; linear probe = logistic regression with "
            "C chosen on a held-out 10% of the training split; kNN = cosine, k=200, weighted):\n\n" + table + "\n")
    atomic_write(out / RunFolder.REPORT, lambda f: f.write(text.encode()))
    print("\n" + table + f"\n\nreport written to {out / 'report.md'}")


def cmd_eval(args) -> dict:

    checkpoint = Path(args.checkpoint)
    # The checkpoint's identity before and after it is read: the same, or a run replaced it meanwhile.
    evaluated = checkpoint_identity(checkpoint) if checkpoint.is_file() else None
    encoder, config = _encoder_or_exit(checkpoint)  # (a missing or unusable file exits here, named)
    if checkpoint_identity(checkpoint) != evaluated:
        raise SystemExit(f"error: {checkpoint} changed while it was read (a run is writing it); run eval again")
    trained_on = config.dataset
    try:
        if args.dataset and args.dataset != config.dataset:  # transfer: probes on another data set's features
            # The encoder still sees inputs normalised as in its training.
            config = config.replace(dataset=args.dataset, data_dir=args.data_dir, policy=None,
                                    normalise=config.normalisation_name())
        elif args.data_dir:
            config = config.replace(data_dir=args.data_dir)
        config = config.replace(download=args.download)
        # Default: the checkpoint's folder; a transfer evaluation gets its own sub-folder (eval-<data set>).
        out = Path(args.out) if args.out else checkpoint.parent / (
            f"eval-{config.dataset}" if config.dataset != trained_on else "")
        ensure_writable_folder(out)  # before the work, not after it
        print(f"evaluating {checkpoint} (trained on {trained_on}) on {config.dataset}; results into {out}", flush=True)
        results = evaluate_encoder(encoder, config, baselines=not args.no_baselines, mlp=args.mlp)
    except (FileNotFoundError, ValueError, RunFolderError) as error:
        raise SystemExit(f"error: {error}") from None
    out.mkdir(parents=True, exist_ok=True)
    # What was evaluated, for amdim_lib.analysis.results (the run's config.json names the training data set only).
    _write_report(out, config, "checkpoint", {"steps": evaluated["step"]}, results, evaluated, trained_on)
    return results


def cmd_download(args) -> dict:

    try:
        root = fetch(args.dataset, args.data_dir)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{args.dataset} is ready in {root}")
    return {"root": str(root)}


def _fetched_root(args) -> str | None:
    """--data-dir, after fetching the data set into it with --download (the notebooks never download:
    a parameter they do not declare would be dropped)."""
    if args.download:
        return str(cmd_download(args)["root"])
    return args.data_dir


def cmd_bench(args) -> dict:

    config = config_from_args(args)
    device = _device_or_exit(config.device)
    try:
        check_fits(config, device, half_precision=autocast_dtype(config.amp, device) is not None)
        result = bench_training(config, steps=args.steps, flops=not args.no_flops)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    result.update(amp=config.amp, compile=config.compile, channels_last=config.channels_last)
    result["machine"] = machine_summary(device)
    print(f"on {result['machine']}; {execution_summary(config, device, autocast_dtype(config.amp, device))}")
    print(f"{args.preset} preset, {config.image_size} px, ndf {config.ndf}, n_rkhs {config.n_rkhs}, "
          f"n_depth {config.n_depth}, batch {config.batch_size} on {result['device']} (amp {config.amp}, "
          f"channels_last {config.channels_last}, compile {config.compile}):")
    print(f"  training: {result['seconds_per_step']:.3f} s/step, {result['images_per_s']:.0f} images/s (both views), "
          f"peak memory {result['peak_memory_mib']:.0f} MiB")
    if "gflop_per_step" in result:
        print(f"  {result['gflop_per_step']:.1f} GFLOP/step ({result['gflop_per_image']:.3f} GFLOP/image), "
              f"{result['achieved_gflops']:.0f} GFLOP/s = {100 * result['fraction_of_peak']:.0f}% of a "
              f"{result['matmul_peak_gflops']:.0f} GFLOP/s matmul measured now")
    if args.speed_rules:
        rules = bench_speed_rules(config)
        result["speed_rules"] = rules
        print(f"  speed rules (amdim_lib/run/speed.py, convolutions as matmuls): {rules['seconds_per_step_with_rules']:.3f} "
              f"s/step with, {rules['seconds_per_step_plain']:.3f} without: {rules['ratio']:.2f}x (medians of "
              f"{rules['rounds']} alternating rounds of {rules['steps_per_round']} steps)")
    if not args.no_data:
        data = bench_data(config.replace(train_size=min(config.train_size or 10**9, 4 * config.batch_size * 3)))
        result.update(data_images_per_s=data["images_per_s"], data_later_images_per_s=data["later_images_per_s"],
                      batch_views=data["batch_views"])
        views = "views per batch on the device" if data["batch_views"] else "views per image in the loader"
        print(f"  data pipeline alone ({data['num_workers']} workers, {views}): {data['images_per_s']:.0f} images/s "
              f"in a first epoch, {data['later_images_per_s']:.0f} in the next")
        if not data["num_workers"]:  # in the training process: its time adds to every step's
            per_step = [2 * config.batch_size / data[k] for k in ("images_per_s", "later_images_per_s")]
            serial = [p / (p + result["seconds_per_step"]) for p in per_step]
            over_run = over_epochs(*serial, config.epochs)
            result.update(data_seconds_per_step=per_step, data_loading_share=serial, data_loading_share_over_run=over_run)
            print(f"  without workers that is {1e3 * per_step[0]:.1f} / {1e3 * per_step[1]:.1f} ms a step, "
                  f"{100 * serial[0]:.1f}% / {100 * serial[1]:.1f}% of a step fed by it; over this configuration's "
                  f"{config.epochs} epochs {100 * over_run:.1f}%")
        # The same steps fed by the real pipeline: what training loses to data loading.
        steps = args.data_steps
        end_to_end = bench_end_to_end(config.replace(train_size=config.batch_size * steps), steps=steps)
        first, later = end_to_end["first_epoch"], end_to_end["later_epochs"]
        loss = {name: 1 - e["synthetic_seconds_per_step"] / e["seconds_per_step"] for name, e in end_to_end.items()
                if isinstance(e, dict)}
        # Over the configuration's epochs: the first reads every image afresh, the others as measured later.
        over_run = over_epochs(loss["first_epoch"], loss["later_epochs"], config.epochs)
        result.update(end_to_end=end_to_end, data_loading_loss_first_epoch=loss["first_epoch"],
                      data_loading_loss_later_epochs=loss["later_epochs"], data_loading_loss=over_run)
        print(f"  with the real data pipeline ({steps} steps an epoch, alternating with synthetic steps): first epoch {first['seconds_per_step']:.3f} "
              f"s/step against {first['synthetic_seconds_per_step']:.3f} ({100 * loss['first_epoch']:.1f}% lost to data loading), "
              f"later epochs {later['seconds_per_step']:.3f} against {later['synthetic_seconds_per_step']:.3f} "
              f"({100 * loss['later_epochs']:.1f}%); over this configuration's {config.epochs} epochs {100 * over_run:.1f}%")
    if args.profile:
        result["profile"] = _print_profile(config, args.steps)
    if args.compare_official:
        result["official"] = _print_official_comparison(config, args.compare_official, result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def _print_profile(config, steps: int) -> dict:
    try:
        profile = profile_step(config, steps=max(steps // 2, 3))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    phases, step = profile["phases"], profile["seconds_per_step"]
    print(f"  where a step goes (median of phased steps, the device synchronised around each phase; "
          f"the plain step {1e3 * step:.1f} ms, its phases together {1e3 * profile['phased_seconds_per_step']:.1f} ms):")
    for phase, seconds in phases.items():
        note = " (the data pipeline, per batch; not part of the steps above)" if phase == "views" else ""
        print(f"    {phase:<17} {1e3 * seconds:8.1f} ms  {100 * seconds / step:5.1f}%{note}")
    return profile


def _print_official_comparison(config, official_dir: str, measured: dict) -> dict:
    try:
        compared = bench_against_official(config, official_dir)
    except (FileNotFoundError, ImportError) as error:
        raise SystemExit(f"error: {error}") from None
    ours, theirs = compared["seconds_per_step"], compared["official_seconds_per_step"]
    print(f"  against the official code in {official_dir} (same sizes, batch and inputs; {len(ours)} alternating "
          f"rounds): official {min(theirs):.3f}-{max(theirs):.3f} s/step, this library {min(ours):.3f}-{max(ours):.3f} "
          f"s/step: {compared['speedup']:.2f}x the official step rate (ratio of medians)")
    if "gflop_per_step" in measured:  # the share at this comparison's median, which drifts less from the official's
        compared["fraction_of_peak"] = measured["gflop_per_step"] / statistics.median(ours) / measured["matmul_peak_gflops"]
        print(f"  at its median this library's step runs at {100 * compared['fraction_of_peak']:.0f}% of the "
              f"{measured['matmul_peak_gflops']:.0f} GFLOP/s matmul above")
    return compared


def cmd_sweep(args) -> dict:
    """Ablations: train each (variant, seed) for the same budget, probe it, print one table."""

    config = config_from_args(args)
    _device_or_exit(config.device)
    scale = sweep_scale(args.preset)
    steps = None if args.full_schedule else (args.steps if args.steps is not None else scale["steps"])
    seeds = args.seeds if args.seeds else list(range(scale["n_seeds"]))
    out = Path(args.out or f"runs/ablations-{config.dataset}-{args.preset}")
    print(f"sweep on {config.dataset} ({args.preset} preset) into {out}: seeds {seeds}, "
          + ("each configuration's own schedule" if steps is None else f"{steps} updates per run"))
    try:
        records = run_sweep(config, args.variants or scale["variants"], seeds, out, steps=steps,
                            probe_train=scale["probe_train"], probe_test=scale["probe_test"], device=args.device)
    except TrainingInterrupted as error:
        print(error)
        return {"interrupted": error.signal}
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise SystemExit(f"error: {error}") from None
    table = sweep_table(records)
    reference = "full" if any(r["variant"] == "full" for r in table) else table[0]["variant"]
    comparisons = significant_differences(table, reference=reference)
    text = table_markdown(table, comparisons)
    (out / "table.md").write_text(text + f"\n\n* : {SIGNIFICANCE_RULE}\n")
    (out / "summary.json").write_text(json.dumps(sweep_metrics(table, comparisons, records), indent=2))
    significant = significant_names(comparisons, reference)
    print(f"\n{text}\n\n* : {SIGNIFICANCE_RULE}.\nexceeding the spread vs {reference}: "
          f"{', '.join(significant) or 'none'}\n{steps_trained_now(records)} updates trained now; "
          f"table in {out / 'table.md'}")
    return {}


def cmd_demo(args) -> dict:
    """The main job: every notebook in order at the demo preset on Shapes, then one HTML report. With
    another --dataset (photographs: cifar10, a class-folder tree, ...), the training and evaluation
    notebooks (04, 05) on it, into runs/demo-<dataset> unless --out says otherwise."""
    if args.dataset == "shapes":
        out, only, data = args.out or "runs/demo", args.only, {}
    else:
        out, only = args.out or f"runs/demo-{args.dataset}", args.only or ["04", "05"]
        data = dict(dataset=args.dataset, data_dir=_fetched_root(args))
    try:
        return run_workbook(out, preset=args.preset, only=only, device=args.device or "auto", **data)
    except NotebookError as error:
        raise SystemExit(f"make demo stopped: {error}; the notebooks that finished are kept: run the same "
                         "command again to continue from this one") from None
    except ValueError as error:  # --only names no notebook
        raise SystemExit(f"error: {error}") from None


def cmd_reproduce(args) -> dict:
    """Training and evaluation notebooks (04, 05) at the paper preset for one data set (meant for a GPU)."""

    out = args.out or f"runs/reproduce-{args.dataset}"
    try:
        return run_workbook(out, preset=args.preset, only=["04", "05"], dataset=args.dataset,
                            data_dir=_fetched_root(args), device=args.device or "auto")
    except NotebookError as error:
        raise SystemExit(f"reproduce stopped: {error}") from None


def _add_workbook_commands(sub) -> None:
    """The commands that run the notebooks: demo (the workbook) and reproduce (04-05 at the paper preset)."""
    p = sub.add_parser("demo", help="run every notebook at the demo preset and write runs/demo/report.html (what `make demo` runs)")
    p.add_argument("--out", help="where executed notebooks, figures, metrics and report.html go (default runs/demo, "
                                 "or runs/demo-<dataset>)")
    p.add_argument("--dataset", default="shapes", choices=sorted(PRESETS),
                   help="shapes (default): the whole workbook; another data set (e.g. cifar10: photographs): the "
                        "training and evaluation notebooks on it at the same preset")
    p.add_argument("--data-dir", help="root of that data set (default data/<name>/; needed for --dataset folder)")
    p.add_argument("--download", action="store_true", help="fetch the data set first where a network allows")
    p.add_argument("--preset", default="demo", help="preset passed to every notebook (default demo)")
    p.add_argument("--only", nargs="*", help="run only these notebooks (e.g. 01 04)")
    p.add_argument("--device", help="device passed to the notebooks that train (default auto)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("reproduce", help="run the training and evaluation notebooks at the paper preset (GPU)")
    _add_config_args(p)
    p.set_defaults(preset="paper")
    p.add_argument("--out", help="default runs/reproduce-<dataset>")
    p.set_defaults(func=cmd_reproduce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m amdim_lib", description="AMDIM workbook: train, evaluate and benchmark AMDIM.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="self-supervised training (writes checkpoint.pt, metrics.jsonl, config.json)")
    _add_config_args(p)
    p.add_argument("--out", help="run directory (default runs/<dataset>-<preset>)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in <out> from its newest checkpoint "
                       "(same configuration); without it (or --overwrite) a folder holding a run is refused")
    again.add_argument("--overwrite", action="store_true", help="delete the run in <out> (checkpoints, log, config, "
                       "evaluation) and train a new one there")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--evaluate", action="store_true", help="after training, run the frozen-feature report with baselines")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="frozen-feature linear probe and kNN of a checkpoint, beside random-init and raw-pixel baselines")
    p.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by train, or an official AMDIM checkpoint "
                   "(the released ImageNet encoders; amdim_lib/official.py)")
    p.add_argument("--data-dir", help="override the data root stored in the checkpoint")
    p.add_argument("--dataset", choices=sorted(PRESETS),
                   help="evaluate on another data set than the one trained on (transfer, e.g. an ImageNet encoder "
                        "probed on places205); its root is --data-dir or data/<name>/")
    p.add_argument("--download", action="store_true", help="fetch the evaluation data set first when missing")
    p.add_argument("--no-baselines", action="store_true", help="skip the random-init and raw-pixel baselines")
    p.add_argument("--mlp", action="store_true", help="also fit the MLP probe (slower)")
    p.add_argument("--out", help="where to write eval.json and report.md (default: the checkpoint's folder)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("download", help="fetch a data set into data/<name>/ (CIFAR-10/100, STL-10: download; "
                                        "ImageNet, Places205: unpack the official archives placed there)")
    p.add_argument("--dataset", required=True, choices=["cifar10", "cifar100", "stl10", "imagenet", "places205"])
    p.add_argument("--data-dir", help="root to fetch into (default data/<name>/)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("bench", help="training-step images/s and peak memory, and data-pipeline images/s")
    _add_config_args(p)
    p.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    p.add_argument("--steps", type=_positive_int, default=10, help="timed steps after 3 warm-up steps (default 10)")
    p.add_argument("--no-data", action="store_true", help="skip the data-pipeline measurements")
    p.add_argument("--data-steps", type=_positive_int, default=10,
                   help="steps per epoch of the end-to-end measurement, over that many batches of images "
                        "(default 10; the preset's whole epoch, e.g. 93 for the demo, is the closest to a real run)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (e.g. with --set compile=True)")
    p.add_argument("--speed-rules", action="store_true",
                   help="also time the step without the speed rules of amdim_lib/run/speed.py (alternating rounds)")
    p.add_argument("--profile", action="store_true",
                   help="also time each phase of a step: views, encoder forward/backward, NCE terms, probes, optimiser")
    p.add_argument("--compare-official", metavar="PATH",
                   help="also time the official code's step (a local copy of github.com/Philip-Bachman/amdim-public "
                        "in PATH) alternately with ours at the same configuration and print the ratio")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("sweep", help="ablations: train variants x seeds for one budget, probe each, print one table "
                                     "(resumable: finished runs are skipped)")
    _add_config_args(p)
    p.add_argument("--out", help="sweep folder, one <variant>/seed<k>/ per run (default runs/ablations-<dataset>-<preset>)")
    p.add_argument("--variants", nargs="+", help="names from amdim_lib.analysis.sweep.VARIANTS, or all (default: the preset's list)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the preset's number of seeds, from 0)")
    p.add_argument("--steps", type=int, help="updates per run (default: the preset's sweep budget)")
    p.add_argument("--full-schedule", action="store_true", help="each run follows its configuration's own schedule")
    p.set_defaults(func=cmd_sweep)

    _add_workbook_commands(sub)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


# What a command interrupted by Ctrl-C (a second one, for train) leaves, and how to go on.
AFTER_INTERRUPT = {"train": "continue from the run's last checkpoint with --resume",
                   "eval": "its results are written only when it completes: evaluate again",
                   "sweep": "finished runs are kept: run the sweep again to continue",
                   "demo": "the notebooks that finished are kept: run the same command again to continue"}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print(f"{args.command} interrupted (Ctrl-C); {AFTER_INTERRUPT.get(args.command, 'nothing more was done')}",
              file=sys.stderr)
        return 128 + signal.SIGINT
    interrupted = result.get("interrupted") if isinstance(result, dict) else None
    # An interrupted run saved its checkpoint; the exit code still says it did not finish (128 + signal).
    return 128 + signal.Signals[interrupted].value if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
