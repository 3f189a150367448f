"""TPE + ASHA against a full grid over the same search space: best PSNR reached and compute used.

Both run the same Tune trainable (s2s_sweep.sweep) on the same seeded subset of the demo
set; steps come from each training's PSNR-vs-steps curve in both. Compute is counted in
training steps actually run (images trained x steps per image) and in trial seconds.
Goal: within 0.1 dB of the grid's best at <= 30% of its compute.

    python benchmarks/bench_sweep.py [--space benchmarks/bench_sweep_space.yaml] [--trials 5]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from model.config import S2SConfig
from s2s_sweep.configs import load_space
from s2s_sweep.datasets import open_dataset
from s2s_sweep.sweep import METRIC, DefineSpace, make_trainable, paper_point, sweep_inputs, tpe_sampler


def summarise(results, subset_size: int, steps_per_image: int) -> dict:
    best, images, seconds = -np.inf, 0, 0.0
    for result in results:
        history = result.metrics_dataframe
        if history is None or history.empty:
            continue
        last = history.iloc[-1]
        images += int(last["images_done"])
        seconds += float(last["time_total_s"])
        if int(last["images_done"]) == subset_size:
            best = max(best, float(last[METRIC]))
    return {"best_psnr": best, "trials": len(results), "training_steps": images * steps_per_image, "trial_seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(Path(__file__).with_name("bench_sweep_space.yaml")))
    parser.add_argument("--trials", type=int, help="TPE budget (default: the space's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/results/bench_sweep.json")
    args = parser.parse_args()

    space = load_space(args.space)
    ray.init(log_to_driver=False)
    ids, images, seed_images, checkpoints, base_fields = sweep_inputs(open_dataset("demo"), space, S2SConfig(lambda_iqa=0.0), args.seed)
    trainable = make_trainable(images, seed_images, base_fields, checkpoints, space)
    p = space.search["p"]
    grid = [round(x, 6) for x in np.arange(p.low, p.high + p.step / 2, p.step)]
    common = {"metric": METRIC, "mode": "max", "max_concurrent_trials": space.concurrency}

    grid_results = tune.Tuner(trainable, param_space={"p": tune.grid_search(grid)}, tune_config=tune.TuneConfig(**common)).fit()
    searcher = OptunaSearch(space=DefineSpace(space), points_to_evaluate=[paper_point(space)], sampler=tpe_sampler(args.seed), **{k: common[k] for k in ("metric", "mode")})
    scheduler = ASHAScheduler(time_attr="images_done", max_t=len(ids), grace_period=space.grace_images, reduction_factor=space.reduction_factor)
    tpe_results = tune.Tuner(
        trainable, tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=args.trials or space.trials, **common)
    ).fit()

    rows = {"grid": summarise(grid_results, len(ids), max(checkpoints)), "tpe_asha": summarise(tpe_results, len(ids), max(checkpoints))}
    gap = rows["grid"]["best_psnr"] - rows["tpe_asha"]["best_psnr"]
    compute = rows["tpe_asha"]["training_steps"] / rows["grid"]["training_steps"]
    print(f"{'search':>9} {'trials':>6} {'best PSNR':>9} {'train steps':>11} {'trial s':>8}")
    for name, row in rows.items():
        print(f"{name:>9} {row['trials']:6d} {row['best_psnr']:9.3f} {row['training_steps']:11d} {row['trial_seconds']:8.0f}")
    print(f"TPE+ASHA is {gap:+.3f} dB from the grid's best at {100 * compute:.0f}% of its training steps (goal: <= 0.1 dB at <= 30%)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"space": args.space, "subset": ids, "grid_p": grid, "rows": rows, "gap_db": gap, "compute_ratio": compute}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
