"""Throughput of the dataset runner with 1 and 2 Ray workers, and Ray's per-task overhead.

Same images (the first 4 of the demo set), same short runs, one torch thread per image:
1. a plain Python loop calling the task function (no Ray) — the reference;
2. run_dataset (the product: Ray tasks, PNG, Parquet and MLflow writes) on a local Ray
   with 1 CPU, then with 2 CPUs.
Figures: images/hour, per-task overhead of (2) with 1 worker against (1), and parallel
efficiency = images/hour with 2 workers / (2 x images/hour with 1 worker).
Goal: efficiency >= 90% where the hardware has the cores.

    python benchmarks/bench_scaling.py [--images 4] [--steps 40] [--passes 8]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import ray
import torch

from model.config import S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.runner import RunOptions, denoise_image, run_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--json", default="benchmarks/results/bench_scaling.json")
    args = parser.parse_args()

    dataset = open_dataset("demo").select(limit=args.images)
    config = S2SConfig(steps=args.steps, passes=args.passes, lambda_iqa=0.0, device="cpu")
    torch.set_num_threads(1)
    denoise_image(*next(iter(dataset)), config, cpus=1)  # warm-up: imports, allocator

    started = time.perf_counter()
    for item in dataset:
        denoise_image(*item, config, cpus=1)
    loop_seconds = time.perf_counter() - started

    rows = {"plain_loop": {"workers": 1, "seconds": loop_seconds}}
    for workers in (1, 2):
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        with tempfile.TemporaryDirectory() as out:
            run_dataset(open_dataset("demo").select(limit=1), config, RunOptions(out=out, flush_seconds=0))  # warm workers
            started = time.perf_counter()
            run_dataset(dataset, config, RunOptions(out=out, flush_seconds=0))
            rows[f"ray_{workers}_workers"] = {"workers": workers, "seconds": time.perf_counter() - started}
        ray.shutdown()
    for row in rows.values():
        row["images_per_hour"] = 3600 * len(dataset) / row["seconds"]

    overhead = (rows["ray_1_workers"]["seconds"] - loop_seconds) / len(dataset)
    efficiency = rows["ray_2_workers"]["images_per_hour"] / (2 * rows["ray_1_workers"]["images_per_hour"])
    print(f"{'how':>14} {'workers':>7} {'seconds':>8} {'images/h':>9}")
    for name, row in rows.items():
        print(f"{name:>14} {row['workers']:7d} {row['seconds']:8.1f} {row['images_per_hour']:9.1f}")
    print(f"Ray + recording overhead per image: {overhead:+.2f} s ({100 * overhead * len(dataset) / loop_seconds:+.1f}% of the work)")
    print(f"parallel efficiency, 2 workers: {100 * efficiency:.0f}% (goal >= 90%)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    report = {"images": len(dataset), "steps": args.steps, "passes": args.passes, "rows": rows, "overhead_s_per_image": overhead, "efficiency": efficiency}
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
