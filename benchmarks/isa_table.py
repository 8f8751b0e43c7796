"""CPU speed per instruction set: the training step at the demo and paper-small sizes, with the
official code's step timed in the same process, natively and with the vector ISA capped (AVX2; and
AVX-512 without AMX, which only means something on a CPU that has AMX).

    python benchmarks/isa_table.py OFFICIAL_DIR [--out runs/isa-table] [--steps 6]

OFFICIAL_DIR is a local copy of github.com/Philip-Bachman/amdim-public (never committed). Each cell
is one `python -m amdim_lib bench ... --compare-official OFFICIAL_DIR` in a fresh process; AVX2 is
emulated by capping oneDNN (convolutions), MKL (matmuls) and ATen (elementwise kernels) through
their environment variables, which the process reads at start. Prints a markdown table and writes
every run's JSON into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ISAS = {
    "native": {},
    # On a CPU with AMX: oneDNN held to AVX-512 BF16, as on CPUs with bf16 instructions but no AMX.
    "AVX-512, no AMX": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},
    "AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}
CONFIGS = {  # name: the bench arguments (Shapes: the demo preset, and `paper` = the official default 128/1024/3)
    "demo (ndf 32, n_rkhs 256, depth 2)": ["--preset", "demo"],
    "paper small (ndf 128, n_rkhs 1024, depth 3)": ["--preset", "paper"],
}
VARIANTS = {"amp=auto (default)": [], "float32 (amp=off)": ["--set", "amp=off"]}


def run_cell(official: Path, out: Path, isa: str, config: list[str], variant: list[str], steps: int) -> dict:
    name = "-".join([isa.replace(",", "").replace(" ", "-"), *config, *variant]).replace("--", "").replace("=", "_")
    path = out / f"{name}.json"
    command = [sys.executable, "-m", "amdim_lib", "bench", *config, *variant, "--batch-size", "64", "--no-data",
               "--steps", str(steps), "--compare-official", str(official), "--json", str(path)]
    done = subprocess.run(command, env={**os.environ, **ISAS[isa]}, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    print(done.stdout, flush=True)
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/isa-table"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--isa", action="append", choices=list(ISAS), help="only these (repeatable; default all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = ["| ISA | model, batch 64 | precision | s/step | official s/step | ratio | % of same-run matmul (GEMM) |",
            "|---|---|---|---:|---:|---:|---:|"]
    for isa in args.isa or ISAS:
        for name, config in CONFIGS.items():
            for variant, extra in VARIANTS.items():
                r = run_cell(args.official_dir, args.out, isa, config, extra, args.steps)
                ours, official = (statistics.median(r["official"][k]) for k in
                                  ("seconds_per_step", "official_seconds_per_step"))
                # The share at the s/step shown (the alternating median), not at bench's own earlier timing:
                # on a drifting machine the two differ by up to 10 points.
                share = r["official"]["fraction_of_peak"]
                rows.append(f"| {isa} | {name} | {variant} | {ours:.3f} | {official:.3f} | {r['official']['speedup']:.2f}x | "
                            f"{100 * share:.0f}% of {r['matmul_peak_gflops']:.0f} GFLOP/s |")
    table = "\n".join(rows)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
