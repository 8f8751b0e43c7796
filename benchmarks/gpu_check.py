"""The GPU measurements of the performance issue, as one script with a deadline.

    python benchmarks/gpu_check.py --out results/ [--budget-s 480] [--small]

Runs, each in its own process (so that compile caches and peak-memory counters do not mix):
the paper's CIFAR-10 model (ndf 320, n_rkhs 1280, n_depth 10, batch 200) in bf16: one benchmark and
300 updates on the CIFAR-10 subset; training-step throughput and peak memory of the 32-px and 128-px
paper models in fp32 and bf16, eager and compiled (the 32-px model in bf16 also with CUDA graphs);
the end-to-end loop fed by the real data pipeline with workers; and the DDP path (torchrun, one
process per GPU). The CIFAR model and the 128-px model in bf16 get the projected wall time of their
full paper schedules (300 and 100 epochs) on one GPU and on eight. Results go to
<out>/gpu_check.json and a Markdown table; runs that no longer fit the budget are listed as skipped.
The training runs write under /tmp/gpu-check-runs/, replacing what an earlier check left there.
`--small` runs tiny configurations (to try the script on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable


def bench(name, dataset, preset, batch, amp, compiled, small, extra=(), mode="default"):
    settings = ["--set", f"amp={amp}", "--set", f"compile={compiled}", "--set", f"compile_mode={mode}", *extra]
    if small:
        preset, batch = "smoke", 8
    return name, [PY, "-m", "amdim_lib", "bench", "--dataset", dataset, "--preset", preset, "--batch-size", str(batch),
                  "--steps", "10", *settings, *(["--no-flops"] if compiled else []),
                  *(["--no-data"] if "num_workers" not in " ".join(extra) else [])]


# The paper's CIFAR-10 model (ndf 320, n_rkhs 1280, n_depth 10) at its batch of 200.
CIFAR_PAPER = ("--set", "ndf=320", "--set", "n_rkhs=1280", "--set", "n_depth=10")
# Full paper schedules of the benchmarked models: (items in the training split, epochs).
SCHEDULES = {"CIFAR paper model": (50_000, 300), "128px bf16": (1_281_167, 100)}


def runs(small: bool, workers: int, cifar_dir: str):
    p32 = ("shapes", "paper", 200)      # 32 px: ndf 128, n_rkhs 1024, n_depth 3 at the paper's batch
    p128 = ("imagenet", "paper", 64)    # 128 px: ndf 320, n_rkhs 2560, n_depth 10 (the 68.1% model)
    yield bench("32px CIFAR paper model (320/1280/10) bf16 eager", "shapes", "paper", 200, "bf16", False, small,
                extra=() if small else CIFAR_PAPER)
    # A few hundred updates of that model on the CIFAR-10 subset (10,000 images: 50 updates an epoch).
    yield "train CIFAR paper model bf16, 300 updates on the CIFAR-10 subset", [
        PY, "-m", "amdim_lib", "train", "--dataset", "folder", "--data-dir", cifar_dir, "--no-progress",
        "--preset", "smoke" if small else "demo", *(() if small else CIFAR_PAPER), "--set", "batch_size=200",
        "--set", "epochs=6", "--set", "amp=bf16", "--set", f"num_workers={workers}", "--set", "eval_every=100",
        "--out", "/tmp/gpu-check-runs/cifar-paper", "--overwrite"]
    yield bench("32px fp32 eager", *p32, "off", False, small)
    yield bench("32px bf16 eager", *p32, "bf16", False, small)
    # The 32-px step is bound by kernel launches (27 ms at batch 200 whatever the precision): CUDA graphs.
    yield bench("32px bf16 compiled, CUDA graphs (reduce-overhead)", *p32, "bf16", True, small, mode="reduce-overhead")
    yield bench("32px bf16 compiled", *p32, "bf16", True, small)
    yield bench("128px fp32 eager", *p128, "off", False, small)
    yield bench("128px bf16 eager", *p128, "bf16", False, small)
    yield bench(f"32px bf16 eager, real data pipeline ({workers} workers)", *p32, "bf16", False, small,
                extra=("--set", f"num_workers={workers}"))
    train = ["-m", "amdim_lib", "train", "--dataset", "shapes", "--preset", "smoke" if small else "paper",
             "--no-progress", "--set", "epochs=1", "--set", "train_size=" + ("64" if small else "8000"),
             "--set", "test_size=" + ("64" if small else "1000"),
             "--set", f"num_workers={workers}", "--set", "amp=bf16"]
    yield "train 32px bf16, one process", [PY, *train, "--out", "/tmp/gpu-check-runs/single", "--overwrite"]
    yield "train 32px bf16, torchrun DDP, 1 GPU", [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                                                   *train, "--out", "/tmp/gpu-check-runs/ddp", "--overwrite"]
    yield bench("128px bf16 compiled", *p128, "bf16", True, small)
    yield bench("32px fp32 compiled", *p32, "off", True, small)
    yield bench("128px fp32 compiled", *p128, "off", True, small)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu-check")
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    parser.add_argument("--cifar-dir", default="../shared/data/cifar10-subset",
                        help="CIFAR-10 images in the folder layout (train/, test/ class folders)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    results = []
    for name, command in runs(args.small, args.workers, args.cifar_dir):
        left = deadline - time.monotonic()
        if left < 30:
            results.append({"name": name, "skipped": "out of time"})
            continue
        json_path = out / f"run{len(results)}.json"
        if command[2:4] == ["amdim_lib", "bench"]:
            command = command + ["--json", str(json_path)]
        start = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            results.append({"name": name, "skipped": f"timed out after {left:.0f} s"})
            continue
        record = {"name": name, "wall_s": round(time.monotonic() - start, 1), "rc": done.returncode,
                  "stdout": done.stdout[-1500:], "stderr": done.stderr[-1500:] if done.returncode else ""}
        record.update(projection(done.stdout))
        if json_path.exists():
            record.update(json.loads(json_path.read_text()))
            json_path.unlink()
        record.update(schedule_hours(name, record))
        results.append(record)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: rc {done.returncode}, {record['wall_s']} s\n{done.stdout[-800:]}",
              flush=True)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    (out / "gpu_check.md").write_text(table(results))


def projection(stdout: str) -> dict:
    """For a training run: its measured s/step and images/s, from train's closing line (one process
    against torchrun's shows DDP's overhead)."""
    found = re.search(r"done: (\d+) steps in ([\d.]+) s \(([\d.]+) images/s\)", stdout)
    if not found:
        return {}
    steps, seconds, images = int(found[1]), float(found[2]), float(found[3])
    return {"seconds_per_step": seconds / steps, "images_per_s": images, "peak_memory_mib": float("nan")}


def schedule_hours(name: str, result: dict) -> dict:
    """The full paper schedule of a row's model at its measured rate (`bench` and `train` both count
    both views), on one GPU and on eight at linear scaling: an upper bound on DDP's speed-up, which
    one GPU cannot measure."""
    for key, (items, epochs) in SCHEDULES.items():
        if key in name and "images_per_s" in result:
            hours = epochs * items / (result["images_per_s"] / 2) / 3600
            return {"projected_full_schedule_h": hours, "projected_8_gpus_h": hours / 8}
    return {}


def table(results) -> str:
    lines = ["| run | s/step | images/s | peak MiB | GFLOP/step | % of matmul peak | data loss |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "seconds_per_step" not in r:
            lines.append(f"| {r['name']} | {r.get('skipped') or 'rc ' + str(r.get('rc'))} | | | | | |")
            continue
        frac = f"{100 * r['fraction_of_peak']:.0f}" if "fraction_of_peak" in r else ""
        loss = f"{100 * r['data_loading_loss']:.0f}%" if "data_loading_loss" in r else ""
        full = (f"; full paper schedule {r['projected_full_schedule_h']:.1f} h on 1 GPU, {r['projected_8_gpus_h']:.1f} h "
                "on 8 at linear scaling" if "projected_full_schedule_h" in r else "")
        lines.append(f"| {r['name']}{full} | {r['seconds_per_step']:.4f} | {r['images_per_s']:.0f} | {r['peak_memory_mib']:.0f} | "
                     f"{r.get('gflop_per_step', 0):.0f} | {frac} | {loss} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
