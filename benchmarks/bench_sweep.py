"""Is the sweep worth its compute? The sweep's own code replayed on the tabular landscape.

For each noise kind of the landscape (benchmarks/bench_landscape.py), its images are split in two
halves (alternately, in id order): searches choose on the first, the configuration each saves is
scored on the second (held out). Strategies:
- tpe_asha:    the sweep as shipped: s2s_sweep.sweep.make_tuner (Tune, UniqueConfigSearch with the
               paper point first and sweep.tpe_sampler, ASHA on images done, steps read off each
               curve, best_config's cost-aware steps), with a trial evaluating ReplayLandscape
               (table look-ups) instead of TrainImages (training): --seeds seeds;
- random_asha: the same with Optuna's RandomSampler: --seeds seeds;
- tpe_asha_startupN: with --tpe-startup N,...: TPE drawing its first N trials at random (the
               shipped count is sweep.TPE_STARTUP_TRIALS), to choose that count;
- grid:        every p on every search image, the best by best_config;
- paper:       the kind's paper p at the table's largest step count, no search.
- validation:  the sweep's self-validation (s2s_sweep/sweep/validation.py) on random three-way
               splits of the kind's images (validation_replay): does what `--config best` runs stay
               at or above the paper's configuration on images neither the search nor the
               validation saw? (Needs 4 + 2 images of the whole p grid.)
Regret: the grid's optimum (the largest mean PSNR over the search images of any (p, steps)) minus
the mean PSNR over the search images of the configuration a strategy saves. Compute: the training
steps it runs (images trained x the largest checkpoint), as a fraction of the grid's. Each search
runs --trials trials one at a time (reproducible from its seed), and its best after every trial
gives the regret-vs-compute curve (--plot).

    python benchmarks/bench_sweep.py [--seeds 20] [--trials 7] [--json benchmarks/results/bench_sweep.json]
    python benchmarks/bench_sweep.py --kinds polyu --grace-images 2 \\
        --json benchmarks/results/bench_sweep_polyu_grace2.json --plot benchmarks/results/bench_sweep_polyu_grace2.png
"""

import argparse
import json
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pyarrow as pa
import pyarrow.compute as pc
import ray
from common import KINDS, objective_spearman, whole_grid
from ray import tune

from model.config import PAPER_DEFAULTS
from s2s_sweep.configs import ConfigError, load_space
from s2s_sweep.errors import NoTrialFinished
from s2s_sweep.rule import RULE_MARGIN_DB
from s2s_sweep.sweep import (
    CURVE_SCHEMA,
    ReplayLandscape,
    best_config,
    make_trainable,
    make_tuner,
    range_values,
    read_landscape,
    sweep_tables,
    tpe_sampler,
)
from s2s_sweep.sweep.validation import MIN_IMAGES, paired_verdict

SPACE = Path(__file__).with_name("bench_sweep_space.yaml")
GOAL_REGRET_DB, GOAL_COMPUTE = 0.1, 0.3  # the goal: median regret <= 0.1 dB at <= 30% of the grid's compute
SAMPLERS = {"tpe_asha": tpe_sampler, "random_asha": lambda seed: optuna.samplers.RandomSampler(seed=seed)}


def grace_of(text: str) -> int:
    """--grace-images N: ASHA's grace, at least one image (as the space file's early_stopping.grace_images)."""
    if not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"--grace-images {text!r}: expected an integer >= 1")
    return int(text)


def repo_relative(path: str) -> str:
    """`path` relative to the repository root where it lies inside it, else as given."""
    root, resolved = SPACE.parents[1].resolve(), Path(path).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path


def mean_psnr(frame, image_ids: list[str]):
    """Mean PSNR over `image_ids` per (p rounded to 6 places, steps) of one kind's table."""
    rows = frame[frame["image_id"].isin(image_ids)]
    return rows.groupby([rows["p"].round(6), "steps"])["psnr"].mean()


def at(means, settings: dict) -> float:
    """The mean PSNR of saved settings ({p, steps, ...}) in `mean_psnr`'s table."""
    return float(means[(round(settings["p"], 6), settings["steps"])])


def replay(space, evaluation: ReplayLandscape, sampler, seed: int, trials: int, storage: str) -> list[tuple[int, dict]]:
    """One search on the table: after each trial, (images trained so far, the settings it would save)."""
    run_config = tune.RunConfig(name=f"replay-{seed}", storage_path=storage, verbose=0)
    tuner = make_tuner(
        make_trainable(evaluation, space),
        space,
        trials,
        len(evaluation.image_ids),
        seed,
        run_config,
        sampler=sampler,
        concurrency=1,
    )
    results = tuner.fit()
    trials_table, curves_table = sweep_tables(
        results, f"replay-{seed}", len(evaluation.image_ids), evaluation.checkpoints, "cold", space.objective
    )
    order = sorted(
        range(trials_table.num_rows), key=lambda index: trials_table["trial_number"][index].as_py()
    )  # creation order
    anytime, images = [], 0
    for count, index in enumerate(order, 1):
        images += trials_table["images_done"][index].as_py()
        so_far = trials_table.take(order[:count])
        try:
            settings, _ = best_config(
                so_far, curves_table.filter(pc.is_in(curves_table["trial_id"], so_far["trial_id"])), space
            )
        except NoTrialFinished:
            settings = None
        anytime.append((images, settings))
    return anytime


def evaluate(
    anytime: list[tuple[int, dict]], search_means, heldout_means, grid_images: int, paper_heldout: float
) -> dict:
    """Regret, compute and held-out gain of what a search saves at its end, and its anytime curve
    (`search_means`, `heldout_means`: mean_psnr over each half of the images)."""
    optimum = float(search_means.max())
    curve = [
        (images / grid_images, optimum - at(search_means, settings))
        for images, settings in anytime
        if settings is not None
    ]
    images, settings = anytime[-1]
    return {
        "p": settings["p"],
        "steps": settings["steps"],
        "regret_db": optimum - at(search_means, settings),
        "compute_fraction": images / grid_images,
        "heldout_gain_db": at(heldout_means, settings) - paper_heldout,
        "anytime": curve,
    }


def summarise(runs: list[dict]) -> dict:
    regrets = np.array([run["regret_db"] for run in runs])
    q25, q75 = np.percentile(regrets, [25, 75])
    return {
        "median_regret_db": float(np.median(regrets)),
        "regret_spread_db": float(q75 - q25),
        "regret_q25_db": float(q25),
        "regret_q75_db": float(q75),
        "max_regret_db": float(regrets.max()),
        "compute_fraction": float(np.median([run["compute_fraction"] for run in runs])),
        "heldout_gain_db": float(np.median([run["heldout_gain_db"] for run in runs])),
        "median_regret_at_goal_compute_db": regret_at(runs, GOAL_COMPUTE),
        "runs": runs,
    }


def regret_at(runs: list[dict], compute: float) -> float | None:
    """Median over runs of the regret of the best each had saved within `compute` (None while
    any had saved none: a run with nothing saved has no configuration to regret)."""
    values = []
    for run in runs:
        reached = [regret for fraction, regret in run["anytime"] if fraction <= compute + 1e-9]
        if not reached:
            return None
        values.append(reached[-1])
    return float(np.median(values))


def grid_tables(frame, image_ids: list[str]) -> tuple[pa.Table, pa.Table]:
    """The full grid as a finished sweep's trials and curves tables (one trial per p, every image
    of `image_ids` in one kind's table): best_config then picks from it as from any sweep."""
    frame = frame[frame["image_id"].isin(image_ids)]
    trials, curves = [], []
    for p, rows in frame.groupby("p"):
        trial_id = f"grid-p{p:.2f}"
        means = rows.groupby("steps")["psnr"].mean()
        trials.append(
            {
                "trial_id": trial_id,
                "p": float(p),
                "lambda_iqa": 0.0,
                "status": "ok",
                "early_stopped": False,
                "objective": "psnr",
                "score": float(means.max()),
            }
        )
        curves += [
            {
                "sweep_id": "grid",
                "trial_id": trial_id,
                "image_id": r.image_id,
                "metric": "psnr",
                "steps": r.steps,
                "value": r.psnr,
            }
            for r in rows.itertuples()
        ]
    return pa.Table.from_pylist(trials), pa.Table.from_pylist(curves, schema=CURVE_SCHEMA)


def complete_images(landscape: pa.Table, p_grid: list[float]) -> dict[str, pa.Table]:
    """Per kind, the rows of the images that have the whole p grid (a table still being built has
    some that do not); kinds with fewer than two such images (nothing to hold out) are left out."""
    frame = landscape.to_pandas()
    whole = frame[whole_grid(frame, len(p_grid))]
    tables = {}
    for kind in sorted(frame["dataset"].unique()):
        images = sorted(set(whole.loc[whole["dataset"] == kind, "image_id"]))
        if len(images) < 2:
            print(
                f"{kind}: {len(images)} image(s) with the whole p grid; two or more are needed (one to search on, one "
                "to hold out): left out"
            )
            continue
        tables[kind] = landscape.filter(
            pc.and_(pc.equal(landscape["dataset"], kind), pc.is_in(landscape["image_id"], pa.array(images)))
        )
    return tables


def bench_kind(kind: str, table: pa.Table, space, args, storage: str) -> dict:
    """Every strategy on one noise kind."""
    image_ids = sorted(set(table["image_id"].to_pylist()))
    search_ids, heldout_ids = image_ids[0::2], image_ids[1::2]
    frame = table.to_pandas()
    checkpoints = sorted(set(table["steps"].to_pylist()))
    paper_p = PAPER_DEFAULTS[kind.split("-")[0]]["p"]
    space = replace(space, paper={**space.paper, "p": paper_p}, subset_size=len(search_ids))
    search_means, heldout_means = mean_psnr(frame, search_ids), mean_psnr(frame, heldout_ids)
    optimum = float(search_means.max())
    grid_images = search_means.index.get_level_values("p").nunique() * len(search_ids)
    paper = {"p": paper_p, "steps": checkpoints[-1]}
    paper_heldout = at(heldout_means, paper)
    evaluation = ReplayLandscape(table, search_ids, checkpoints)
    print(
        f"{kind}: search on {', '.join(search_ids)}; held out {', '.join(heldout_ids)}; grid optimum {optimum:.2f} dB",
        flush=True,
    )

    strategies = {}
    samplers = SAMPLERS | {f"tpe_asha_startup{n}": lambda seed, n=n: tpe_sampler(seed, n) for n in args.tpe_startup}
    for name, sampler in samplers.items():
        runs = []
        for seed in range(args.seeds):
            anytime = replay(space, evaluation, sampler(seed), seed, args.trials or space.trials, storage)
            runs.append(evaluate(anytime, search_means, heldout_means, grid_images, paper_heldout))
        strategies[name] = summarise(runs)
        print(f"  {name}: {args.seeds} seeds replayed", flush=True)
    grid, _ = best_config(*grid_tables(frame, search_ids), space)
    strategies["grid"] = summarise(
        [evaluate([(grid_images, grid)], search_means, heldout_means, grid_images, paper_heldout)]
    )
    strategies["paper"] = summarise([evaluate([(0, paper)], search_means, heldout_means, grid_images, paper_heldout)])
    tpe, random = strategies["tpe_asha"]["runs"], strategies["random_asha"]["runs"]
    fractions = sorted({f for run in tpe + random for f, _ in run["anytime"]})
    return {
        "search_images": search_ids,
        "heldout_images": heldout_ids,
        "paper_p": paper_p,
        "grid_optimum_psnr": optimum,
        "grid_images": grid_images,
        "strategies": strategies,
        "heldout_gain_db": strategies["tpe_asha"]["heldout_gain_db"],
        "objective_spearman": objective_spearman(frame)["mean"],
        "equal_compute": [
            {"compute_fraction": f, "tpe_asha": regret_at(tpe, f), "random_asha": regret_at(random, f)}
            for f in fractions
        ],
        "validation": validation_replay(kind, table, space, args, storage),
    }


def validation_replay(kind: str, table: pa.Table, space, args, storage: str) -> dict | None:
    """The sweep's self-validation (s2s_sweep/sweep/validation.py) replayed: per seed, the kind's images
    shuffled into validation (MIN_IMAGES, as a sweep's `subset.heldout`), search and test (the rest,
    halved); the shipped search (TPE + ASHA) on the search images, the sweep's own verdict
    (paired_verdict: the rule) of its best against the paper point on the validation images, and on
    the test images — seen by neither — the gain over the paper point of the best and of what
    `--config best` runs (the best where the verdict shows it, else the paper's: a gain of 0)."""
    image_ids = sorted(set(table["image_id"].to_pylist()))
    if len(image_ids) < MIN_IMAGES + 2:
        print(f"{kind}: {len(image_ids)} images; validation needs {MIN_IMAGES} + one to search + one to test")
        return None
    frame = table.to_pandas()
    psnr = frame.set_index(["image_id", frame["p"].round(6), "steps"])["psnr"]
    checkpoints = sorted(set(table["steps"].to_pylist()))
    paper = {"p": space.paper["p"], "steps": checkpoints[-1]}  # bench_kind set the kind's paper p

    def scores(ids: list[str], settings: dict) -> list[float]:
        return [float(psnr[(image_id, round(settings["p"], 6), settings["steps"])]) for image_id in ids]

    runs = []
    for seed in range(args.seeds):
        order = [image_ids[index] for index in np.random.default_rng(seed).permutation(len(image_ids))]
        validate_ids, rest = order[:MIN_IMAGES], order[MIN_IMAGES:]
        search_ids, test_ids = rest[: (len(rest) + 1) // 2], rest[(len(rest) + 1) // 2 :]
        searched = replace(space, subset_size=len(search_ids))
        evaluation = ReplayLandscape(table, search_ids, checkpoints)
        _, best = replay(searched, evaluation, tpe_sampler(seed), seed, args.trials or space.trials, storage)[-1]
        verdict = paired_verdict(scores(validate_ids, best), scores(validate_ids, paper))
        test_gain = float(np.mean(scores(test_ids, best)) - np.mean(scores(test_ids, paper)))
        runs.append(
            {
                "search": search_ids,
                "validate": validate_ids,
                "test": test_ids,
                "best": {"p": best["p"], "steps": best["steps"]},
                **verdict,
                "test_gain_best_db": test_gain,
                "test_gain_run_db": test_gain if verdict["shown"] else 0.0,
            }
        )
    print(f"  validated: {args.seeds} seeds replayed", flush=True)

    def spread(name: str) -> dict:
        values = np.array([run[name] for run in runs])
        return {
            "mean": float(values.mean()),
            "min": float(values.min()),
            "below_margin": int((values < -RULE_MARGIN_DB).sum()),
        }

    return {
        "images": {"validate": MIN_IMAGES, "search": len(runs[0]["search"]), "test": len(runs[0]["test"])},
        "paper": paper,
        "seeds": args.seeds,
        "shown": sum(run["shown"] for run in runs),
        "shown_paper_itself": sum(run["shown"] and run["best"] == paper for run in runs),
        "test_gain_best_db": spread("test_gain_best_db"),
        "test_gain_run_db": spread("test_gain_run_db"),
        "runs": runs,
    }


def report(kinds: dict, trials: int) -> None:
    print(
        f"\n{'kind':>10} {'strategy':>12} {'median regret':>13} {'IQR':>6} {'max':>6} {'compute':>8} "
        f"{'held-out gain':>13}"
    )
    for kind, result in kinds.items():
        for name, row in result["strategies"].items():
            print(
                f"{kind:>10} {name:>12} {row['median_regret_db']:13.3f} {row['regret_spread_db']:6.3f} "
                f"{row['max_regret_db']:6.3f} "
                f"{row['compute_fraction']:8.0%} {row['heldout_gain_db']:+13.3f}"
            )

    def db(value: float | None) -> str:
        return "nothing saved yet" if value is None else f"{value:.3f} dB"

    for kind, result in kinds.items():
        tpe, random = result["strategies"]["tpe_asha"], result["strategies"]["random_asha"]
        at_goal = tpe["median_regret_at_goal_compute_db"]
        met = at_goal is not None and at_goal <= GOAL_REGRET_DB
        print(
            f"{kind}: TPE+ASHA ({trials} trials) ends at {db(tpe['median_regret_db'])} median regret, "
            f"{tpe['compute_fraction']:.0%} of the grid's compute; "
            f"at {GOAL_COMPUTE:.0%} of it: {db(at_goal)} (goal <= {GOAL_REGRET_DB} dB: {'met' if met else 'not met'}), "
            f"random+ASHA {db(random['median_regret_at_goal_compute_db'])}"
        )
        gain, paper = result["heldout_gain_db"], result["strategies"]["paper"]["runs"][0]
        if all((run["p"], run["steps"]) == (paper["p"], paper["steps"]) for run in tpe["runs"]):
            print(
                f"{kind}: the sweep's best is the paper configuration itself (p {paper['p']}, {paper['steps']} "
                "steps) in every seed: the held-out images have nothing to tell"
            )
        else:
            verdict = "beats" if gain > 0 else "does NOT beat"
            print(
                f"{kind}: on the held-out images the sweep's best {verdict} the paper configuration (p "
                f"{result['paper_p']}): {gain:+.3f} dB median"
                + ("" if gain > 0 else " — not a result: the search did not generalise")
            )
        checked = result["validation"]
        if checked is not None:
            best, run = checked["test_gain_best_db"], checked["test_gain_run_db"]
            print(
                f"{kind}: self-validation over {checked['seeds']} shuffles (images: {checked['images']}): best shown "
                f"on {checked['shown']} ({checked['shown_paper_itself']} of them the paper point itself); on the "
                f"test images, best − paper: mean {best['mean']:+.3f}, worst {best['min']:+.3f} dB "
                f"({best['below_margin']} below −{RULE_MARGIN_DB}); what `--config best` runs: mean "
                f"{run['mean']:+.3f}, worst {run['min']:+.3f} dB ({run['below_margin']} below −{RULE_MARGIN_DB})"
            )


def plot(kinds: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), constrained_layout=True, squeeze=False)
    for axis, (kind, result) in zip(axes[0], kinds.items(), strict=True):
        searches = {name: row["runs"] for name, row in result["strategies"].items() if name not in ("grid", "paper")}
        spent = max(run["compute_fraction"] for runs in searches.values() for run in runs)
        fractions = np.linspace(0, spent, 101)  # up to what the searches spent, not beyond
        for (name, runs), colour in zip(searches.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
            per_run = np.array(
                [
                    [next((r for f, r in reversed(run["anytime"]) if f <= x + 1e-9), np.inf) for x in fractions]
                    for run in runs
                ]
            )
            with np.errstate(invalid="ignore"):  # inf (not drawn) until every run has saved a best
                median, q25, q75 = (np.percentile(per_run, q, axis=0) for q in (50, 25, 75))
            axis.plot(fractions, median, color=colour, label=f"{name} (median of {len(runs)} seeds)")
            axis.fill_between(fractions, q25, q75, color=colour, alpha=0.2)
        for name, marker in (("grid", "s"), ("paper", "^")):
            row = result["strategies"][name]
            axis.plot(row["compute_fraction"], row["median_regret_db"], marker, color="black", label=name)
        axis.axhline(GOAL_REGRET_DB, color="grey", linestyle=":")
        axis.axvline(GOAL_COMPUTE, color="grey", linestyle=":")
        axis.set_title(kind)
        axis.set_xlabel("compute (training steps, fraction of the grid's)")
        axis.set_ylabel("regret (dB below the grid's optimum)")
        axis.legend(fontsize=7)
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--landscape", default="benchmarks/results/landscape", help="folder of the landscape's Parquet files"
    )
    parser.add_argument("--space", default=str(SPACE))
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), help="only these noise kinds of the landscape")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, help="trials per search (default: the space file's budget)")
    parser.add_argument(
        "--tpe-startup",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[],
        help="also replay TPE with these start-up trial counts, e.g. 2,4",
    )
    parser.add_argument(
        "--grace-images",
        type=grace_of,
        help="ASHA's grace in images instead of the space file's (early_stopping.grace_images), e.g. 2",
    )
    parser.add_argument("--json", default="benchmarks/results/bench_sweep.json")
    parser.add_argument("--plot", default="benchmarks/results/bench_sweep.png")
    args = parser.parse_args()

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's `group`, once per replay
    space = load_space(args.space)
    if args.grace_images is not None:
        space = replace(space, grace_images=args.grace_images)
    try:
        landscape = read_landscape(args.landscape)
    except ConfigError as error:  # no table there: one line, not a traceback
        raise SystemExit(str(error)) from None
    tables = complete_images(landscape, range_values(space.search["p"]))
    tables = {kind: table for kind, table in tables.items() if args.kinds is None or kind in args.kinds}
    if not tables:
        raise SystemExit(
            f"{args.landscape}: no{' ' + ', '.join(args.kinds) if args.kinds else ''} noise kind with two images of "
            "the whole p grid; build it with bench_landscape.py run"
        )
    ray.init(
        address="local", num_cpus=1, include_dashboard=False, log_to_driver=False
    )  # its own, never a cluster running beside it
    with tempfile.TemporaryDirectory() as storage:
        kinds = {kind: bench_kind(kind, table, space, args, storage) for kind, table in tables.items()}
    ray.shutdown()
    report(kinds, args.trials or space.trials)
    headline = {
        "heldout_gain_db": {kind: result["heldout_gain_db"] for kind, result in kinds.items()},
        "objective_spearman": {kind: result["objective_spearman"] for kind, result in kinds.items()},
    }
    Path(args.json).write_text(
        json.dumps(
            {
                "landscape": args.landscape,
                "space": repo_relative(args.space),  # not the folder this copy of the repository ran in
                "seeds": args.seeds,
                "trials": args.trials or space.trials,
                "grace_images": space.grace_images,
                **headline,
                "kinds": kinds,
            },
            indent=1,
        )
    )
    plot(kinds, args.plot)
    print(f"wrote {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
