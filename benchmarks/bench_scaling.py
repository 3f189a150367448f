"""Throughput of the dataset runner with 1 and 2 Ray workers, and Ray's per-task overhead.

Same images (the first 4 of the demo set), same short runs, one torch thread per image:
1. a plain Python loop calling the task function (no Ray) — the reference;
2. run_dataset (the product: Ray tasks, PNG, Parquet and MLflow writes) on a local Ray
   with 1 CPU, then with 2 CPUs.
Figures: images/hour, per-task overhead of (2) with 1 worker against (1), and parallel
efficiency = images/hour with 2 workers / (2 x images/hour with 1 worker).
Goal: efficiency >= 90% where the hardware has the cores.
3. Elastic: run_dataset on a `ray.cluster_utils.Cluster` with a 1-CPU head; a second 1-CPU
   node joins after the first image is recorded. Images/hour before and after the join
   (from the rows' finish times), and how soon the new node started its first image.

    python benchmarks/bench_scaling.py [--images 4] [--steps 40] [--passes 8] [--join-images 8]
"""

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import ray
import torch

from model.config import S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.methods import Method, denoise_image
from s2s_sweep.runner import RunOptions, run_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument(
        "--join-images", type=int, default=8, help="images of the node-joins run (demo images repeated as a folder)"
    )
    parser.add_argument("--json", default="benchmarks/results/bench_scaling.json")
    args = parser.parse_args()

    dataset = open_dataset("demo").select(limit=args.images)
    config = S2SConfig(steps=args.steps, passes=args.passes, lambda_iqa=0.0, device="cpu")
    torch.set_num_threads(1)
    method = Method(config=config)
    denoise_image(*next(iter(dataset)), method, sigma=None, cpus=1)  # warm-up: imports, allocator

    started = time.perf_counter()
    for item in dataset:
        denoise_image(*item, method, sigma=None, cpus=1)
    loop_seconds = time.perf_counter() - started

    rows = {"plain_loop": {"workers": 1, "seconds": loop_seconds}}
    for workers in (1, 2):
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        with tempfile.TemporaryDirectory() as out:
            run_dataset(
                open_dataset("demo").select(limit=1), method, RunOptions(out=out, flush_seconds=0)
            )  # warm workers
            started = time.perf_counter()
            run_dataset(dataset, method, RunOptions(out=out, flush_seconds=0))
            rows[f"ray_{workers}_workers"] = {"workers": workers, "seconds": time.perf_counter() - started}
        ray.shutdown()
    for row in rows.values():
        row["images_per_hour"] = 3600 * len(dataset) / row["seconds"]

    overhead = (rows["ray_1_workers"]["seconds"] - loop_seconds) / len(dataset)
    efficiency = rows["ray_2_workers"]["images_per_hour"] / (2 * rows["ray_1_workers"]["images_per_hour"])
    print(f"{'how':>14} {'workers':>7} {'seconds':>8} {'images/h':>9}")
    for name, row in rows.items():
        print(f"{name:>14} {row['workers']:7d} {row['seconds']:8.1f} {row['images_per_hour']:9.1f}")
    print(
        f"Ray + recording overhead per image: {overhead:+.2f} s ({100 * overhead * len(dataset) / loop_seconds:+.1f}% "
        "of the work)"
    )
    print(f"parallel efficiency, 2 workers: {100 * efficiency:.0f}% (goal >= 90%)")
    joins = node_joins(config, args.join_images)
    print(
        f"node joins mid-run: {joins['before_images_per_hour']:.1f} img/h before (1 CPU), "
        f"{joins['after_images_per_hour']:.1f} after (2 CPUs); "
        f"the new node started its first image {joins['first_start_after_join_s']:.1f} s after joining"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    report = {
        "images": len(dataset),
        "steps": args.steps,
        "passes": args.passes,
        "rows": rows,
        "overhead_s_per_image": overhead,
        "efficiency": efficiency,
        "node_joins": joins,
    }
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


def node_joins(config: S2SConfig, images: int) -> dict:
    """Throughput before and after a second node joins a running dataset job."""
    from ray.cluster_utils import Cluster

    from s2s_sweep.images import write_png

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    ray.init(address=cluster.address, log_to_driver=False)
    with tempfile.TemporaryDirectory() as folder:
        demo = list(open_dataset("demo"))
        for index in range(images):
            write_png(Path(folder) / "images" / f"img{index:03d}.png", demo[index % len(demo)][1])
        dataset = open_dataset(f"folder:{folder}/images")
        out = f"{folder}/out"
        outcome = {}
        thread = threading.Thread(
            target=lambda: outcome.update(
                run=run_dataset(dataset, Method(config=config), RunOptions(out=out, run_id="joins", flush_seconds=0))
            )
        )
        thread.start()
        results = Path(out) / dataset.key / "joins" / "results"
        while not (results.exists() and len(list(results.rglob("*.parquet"))) >= images // 3):  # one part per image
            time.sleep(0.2)
        joined = time.time()
        cluster.add_node(num_cpus=1)
        thread.join()
        ended = time.time()
    ray.shutdown()
    cluster.shutdown()
    table = outcome["run"].table
    finished = [t.timestamp() for t in table["finished_at"].to_pylist()]
    computing = pc.add(table["train_seconds"], table["inference_seconds"]).to_pylist()
    first_node = table["node_id"][finished.index(min(finished))].as_py()
    new_starts = [
        f - c
        for f, c, node in zip(finished, computing, table["node_id"].to_pylist(), strict=True)
        if node != first_node
    ]
    first = min(finished)  # the clock starts at the first image, after Ray's and the workers' start-up
    before = sum(first < f <= joined for f in finished)
    return {
        "images": images,
        "before_images_per_hour": 3600 * before / (joined - first),
        "after_images_per_hour": 3600 * sum(f > joined for f in finished) / (ended - joined),
        "first_start_after_join_s": min(new_starts) - joined if new_starts else float("nan"),
    }


if __name__ == "__main__":
    main()
