"""What writing TensorBoard events adds to a training step: the time of one EventLog.record of a real
metrics record, against the step time of the same configuration measured in the same process.

    python benchmarks/events_overhead.py --preset demo          # add --set amp=off etc. via env vars
"""

from __future__ import annotations

import argparse
import tempfile
import time

from amdim_lib.bench import bench_training
from amdim_lib.run.events import EventLog
from amdim_lib.run.presets import get_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    config = get_config("shapes", args.preset)
    record = {"kind": "train", "step": 0, "epoch": 0.0, "lr": 1e-3, "1t5": 3.1, "1t7": 3.5, "5t5": 2.9, "reg": 0.01,
              "loss": 9.5, "probe_linear_loss": 2.3, "probe_mlp_loss": 2.3, "probe_linear_acc": 0.1,
              "probe_mlp_acc": 0.1, "images_per_s": 900.0}
    with tempfile.TemporaryDirectory() as folder:
        events = EventLog(folder).open()
        start = time.perf_counter()
        for step in range(args.records):
            events.record({**record, "step": step})
        events.close()  # (flushes: counted)
        per_record = (time.perf_counter() - start) / args.records
    step = bench_training(config, steps=5, flops=False)["seconds_per_step"]
    per_step = per_record / config.log_every
    print(f"{args.preset} preset: one record of {len(record) - 2} scalars {1e3 * per_record:.2f} ms; a record every "
          f"{config.log_every} steps adds {1e3 * per_step:.3f} ms to a {1e3 * step:.0f} ms step "
          f"({100 * per_step / step:.3f}%)")


if __name__ == "__main__":
    main()
