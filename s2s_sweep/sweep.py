"""Per-dataset hyperparameter search with Ray Tune + Optuna (TPE) + ASHA, recorded in MLflow and Parquet.

    python -m s2s_sweep.run demo --sweep [--trials N] [--space FILE.yaml] [--sweep-only]

A trial is one (p, λ_IQA) configuration scored on a fixed, seeded subset of the dataset's
images. It reports the running mean PSNR after each image, so ASHA (resource attribute
`images_done`) stops poor configurations after one or two images.

Steps are the fidelity axis, not a separate dimension: each image is trained once up to
the largest step budget of the search space, and at every step checkpoint the cheap
ensemble (`search.passes` passes) is scored. One training thus yields the whole
PSNR-vs-steps curve, and a trial's steps are the checkpoint where its mean curve peaks;
no configuration is retrained for a smaller budget. With `init: [cold, warm]` under `search:`
the start is a dimension too: a warm trial first trains a seed network on the dataset's first
`warm_images` images (the largest step checkpoint each, its p and λ_IQA), once per trial, and
its curve is then the warm images' PSNR against `warm_steps`. Nor twice: a trial's result depends on
its configuration alone, so the searcher never suggests one already tried (UniqueConfigSearch),
and a search over a discrete space ends when every configuration has been tried.

What a trial evaluates is passed in: TrainImages trains (the sweep), ReplayLandscape looks the
curves up in a tabular landscape (benchmarks/bench_sweep.py replays searches on it); the search
around it (make_tuner) is the same.

Outputs: OUT/DATASET/sweeps/SWEEP_ID/{tune/ (Tune's state, for restore), trials and
curves Parquet tables, best_config.yaml, sweep.json}, and OUT/DATASET/best_config.yaml for
`run DATASET --config best`. MLflow: a parent run per sweep, a child run per trial (Tune's
MLflowLoggerCallback), the best configuration and plots as artifacts of the parent.
"""

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from model.config import S2SConfig
from model.denoiser import denoise_at_steps, train_seed
from model.losses import IQAWeightsMissing, ensure_iqa_weights
from s2s_sweep.configs import ConfigError, SearchSpace
from s2s_sweep.datasets import Dataset
from s2s_sweep.errors import NoTrialFinished, stop_request
from s2s_sweep.images import to_uint8
from s2s_sweep.metrics import calculate_heldout_psnr, calculate_psnr, calculate_ssim
from s2s_sweep.plots import METRIC, mean_psnr_curves, sweep_plots
from s2s_sweep.results import parquet_bytes
from s2s_sweep.session import connect_ray, open_session, write_record
from s2s_sweep.tracking import RunTracker


@dataclass
class SweepOptions:
    out: str = "outputs"
    sweep_id: str | None = None  # None: a new sweep; an existing id is restored (Tuner.restore)
    resume: bool = False  # the sweep must exist already
    trials: int | None = None  # None: the space file's budget
    mlflow_uri: str | None = None
    address: str | None = None
    seed: int = 0  # the sampler's seed (and the S2S+ runs')


def subset_ids(dataset: Dataset, space: SearchSpace) -> list[str]:
    """The fixed, seeded subset of images every trial is scored on (dataset order)."""
    size = min(space.subset_size, len(dataset))
    chosen = set(np.random.default_rng(space.subset_seed).choice(len(dataset), size=size, replace=False).tolist())
    return [image_id for index, image_id in enumerate(dataset.ids) if index in chosen]


def step_checkpoints(space: SearchSpace) -> list[int]:
    """Training-step checkpoints scored along each training: low..high by step (5 points if no step)."""
    steps = space.search["steps"]
    if steps.step:
        return list(range(int(steps.low), int(steps.high) + 1, int(steps.step)))
    return sorted({int(round(s)) for s in np.linspace(steps.low, steps.high, 5)})


@dataclass(frozen=True)
class DefineSpace:
    """Optuna define-by-run space: p (stepped or log/uniform), λ_IQA log-uniform with 0 as its
    own choice. A class, not a closure, so Tune can pickle the searcher to restore a sweep."""

    space: SearchSpace

    def __call__(self, trial) -> None:
        if len(self.space.inits) > 1:
            trial.suggest_categorical("init", list(self.space.inits))
        p = self.space.search["p"]
        trial.suggest_float("p", p.low, p.high, step=p.step, log=p.log)
        lam = self.space.search["lambda_iqa"]
        if lam.fixed_zero:
            return
        use_iqa = trial.suggest_categorical("use_iqa", [True, False]) if lam.allow_zero else True
        if use_iqa:
            trial.suggest_float("lambda_iqa", lam.low, lam.high, step=lam.step, log=lam.log)


def range_values(dimension) -> list[float] | None:
    """Every value of a stepped dimension (as Optuna's grid holds them); None when continuous."""
    if dimension.step is None:
        return None
    count = int(round((dimension.high - dimension.low) / dimension.step)) + 1
    return [round(dimension.low + index * dimension.step, 10) for index in range(count)]


def config_grid(space: SearchSpace) -> list[dict] | None:
    """Every configuration DefineSpace can suggest, in Optuna's parameter names; None when a
    searched dimension is continuous."""
    ps, lam = range_values(space.search["p"]), space.search["lambda_iqa"]
    if lam.fixed_zero:
        points = None if ps is None else [{"p": p} for p in ps]
    else:
        lambdas = range_values(lam)
        if ps is None or lambdas is None:
            return None
        iqa = [{"use_iqa": True, "lambda_iqa": value} if lam.allow_zero else {"lambda_iqa": value} for value in lambdas]
        points = [{"p": p, **choice} for p in ps for choice in ([{"use_iqa": False}] if lam.allow_zero else []) + iqa]
    if points is None or len(space.inits) == 1:
        return points
    return [{"init": init, **point} for init in space.inits for point in points]


def config_key(params: dict) -> tuple:
    return tuple(
        sorted((name, round(value, 9) if isinstance(value, float) else value) for name, value in params.items())
    )


class UniqueConfigSearch(OptunaSearch):
    """Tune's OptunaSearch that never trains a configuration twice. A trial's result is a
    function of its configuration alone (same seed, images and checkpoints), so a suggestion
    equal to an earlier trial's is withdrawn (told to Optuna as failed, which its samplers
    ignore) and asked again; after FRESH_ASKS repeats, an unvisited point of the space's grid
    is taken instead. A discrete space with no unvisited point left ends the search."""

    FRESH_ASKS = 10

    def __init__(self, *args, grid: list[dict] | None, seed: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.grid = grid
        self.rng = np.random.default_rng(seed)

    def suggest(self, trial_id: str):
        config = self.suggest_unvisited(trial_id)
        if isinstance(
            config, dict
        ):  # a stepped p as written (0.9), not as Optuna computes it (0.3 + 12 * 0.05 = 0.9000000000000001)
            config["p"] = round(config["p"], 10)
        return config

    def suggest_unvisited(self, trial_id: str):
        for _ in range(self.FRESH_ASKS):
            config = super().suggest(trial_id)
            if config_key(self._ot_trials[trial_id].params) not in self.visited(trial_id):
                return config
            self.withdraw(trial_id)
        unvisited = [point for point in self.grid or [] if config_key(point) not in self.visited(trial_id)]
        if not unvisited:
            print(
                f"sweep: every configuration of the space{'' if self.grid else ' met so far'} has been tried; no more "
                "trials",
                flush=True,
            )
            return Searcher.FINISHED
        self._ot_study.enqueue_trial(unvisited[self.rng.integers(len(unvisited))])
        return super().suggest(trial_id)

    def visited(self, trial_id: str) -> set[tuple]:
        current = self._ot_trials.get(trial_id)
        return {
            config_key(trial.params)
            for trial in self._ot_study.get_trials(deepcopy=False)
            if not trial.user_attrs.get("withdrawn") and (current is None or trial.number != current.number)
        }

    def withdraw(self, trial_id: str) -> None:
        repeat = self._ot_trials.pop(trial_id)
        repeat.set_user_attr("withdrawn", True)
        self._ot_study.tell(repeat, state=optuna.trial.TrialState.FAIL)


def trial_lambda(config: dict) -> float:
    return config.get("lambda_iqa", 0.0) if config.get("use_iqa", True) else 0.0


def paper_point(space: SearchSpace) -> dict:
    """The paper configuration as Optuna's first trial."""
    lam, searched = space.paper.get("lambda_iqa", S2SConfig.lambda_iqa), space.search["lambda_iqa"]
    point = {"p": space.paper.get("p", S2SConfig.p)}
    if len(space.inits) > 1:
        point["init"] = space.paper.get("init", "cold")
    if searched.allow_zero:
        point["use_iqa"] = lam > 0
    if lam > 0 and not searched.fixed_zero:
        point["lambda_iqa"] = lam
    return point


CURVE_METRICS = ("psnr", "ssim", "heldout_psnr")  # read at every step checkpoint of every image


def image_curves(
    estimates: list[tuple[np.ndarray, np.ndarray]], noisy: np.ndarray, clean: np.ndarray, quantize: str
) -> dict[str, list[float]]:
    """Each CURVE_METRICS value at every checkpoint of one training (denoise_at_steps' estimates)."""
    denoised = [to_uint8(estimate, quantize) for estimate, _ in estimates]
    return {
        "psnr": [calculate_psnr(d, clean) for d in denoised],
        "ssim": [calculate_ssim(d, clean) for d in denoised],
        "heldout_psnr": [calculate_heldout_psnr(heldout, noisy) for _, heldout in estimates],
    }


@dataclass
class TrainImages:
    """What a trial evaluates in a sweep: each subset image trained once up to the largest checkpoint
    (warm: from a seed network trained first, once per trial), every checkpoint scored."""

    images: list  # (image_id, noisy, clean)
    seed_images: list  # noisy images a warm trial's seed trains on
    base: dict  # S2SConfig fields every trial shares
    checkpoints: list[int]
    passes: int

    def curves(self, config: dict) -> Iterator[tuple[str, dict[str, list[float]]]]:
        run_config = S2SConfig(
            **{
                **self.base,
                "p": config["p"],
                "lambda_iqa": trial_lambda(config),
                "init": config.get("init", self.base["init"]),
            }
        )
        seed = train_seed(self.seed_images, run_config) if run_config.init == "warm" else None
        for image_id, noisy, clean in self.images:
            estimates = denoise_at_steps(noisy, run_config, self.checkpoints, self.passes, initial_state=seed)
            yield image_id, image_curves(estimates, noisy, clean, run_config.quantize)


# The tabular landscape (benchmarks/bench_landscape.py): one row per (image, p, step checkpoint).
LANDSCAPE = pa.schema(
    [
        ("dataset", pa.string()),
        ("image_id", pa.string()),
        ("p", pa.float64()),
        ("steps", pa.int64()),
        ("psnr", pa.float64()),
        ("ssim", pa.float64()),
        ("heldout_psnr", pa.float64()),
        ("noisy_psnr", pa.float64()),
        ("side", pa.int64()),
        ("passes", pa.int64()),
        ("precision", pa.string()),
        ("device", pa.string()),
        ("seed", pa.int64()),
        ("seconds", pa.float64()),
    ]
)


def read_landscape(folder: str) -> pa.Table:
    """Every kind's landscape table under `folder` (one Parquet file per kind)."""
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise ConfigError(
            f"{folder}: no landscape tables (*.parquet); build them with benchmarks/bench_landscape.py run"
        )
    return pa.concat_tables([pq.read_table(file, schema=LANDSCAPE) for file in files])


@dataclass
class ReplayLandscape:
    """What a trial evaluates in a replayed sweep: the curves a landscape table holds for its
    configuration, instead of training (only p is searched: the table has λ_IQA 0, cold starts)."""

    table: pa.Table  # LANDSCAPE rows of one dataset
    image_ids: list[str]
    checkpoints: list[int]

    def __post_init__(self):
        self.rows = {}
        for row in self.table.to_pylist():
            self.rows[(row["image_id"], round(row["p"], 6), row["steps"])] = row

    def curves(self, config: dict) -> Iterator[tuple[str, dict[str, list[float]]]]:
        p = round(config["p"], 6)
        for image_id in self.image_ids:
            try:
                rows = [self.rows[(image_id, p, steps)] for steps in self.checkpoints]
            except KeyError:
                raise ConfigError(
                    f"landscape: no curve for image {image_id} at p {p} and steps {self.checkpoints}; search the "
                    "table's p and steps"
                ) from None
            yield image_id, {name: [row[name] for row in rows] for name in CURVE_METRICS}


def sweep_trial(config: dict, evaluation: TrainImages | ReplayLandscape, cpus: float) -> None:
    """One Tune trial: the curves of each subset image in turn, a report after each image (its
    mean PSNR at the best checkpoint so far), so ASHA can stop it after any image."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    curves = {name: [] for name in CURVE_METRICS}
    for done, (image_id, image) in enumerate(evaluation.curves(config), 1):
        for name in CURVE_METRICS:
            curves[name].append(image[name])
        mean_curve = np.mean(curves["psnr"], axis=0)
        best = int(np.argmax(mean_curve))
        tune.report(
            {
                METRIC: float(mean_curve[best]),
                "mean_ssim": float(np.mean(curves["ssim"], axis=0)[best]),
                "best_steps": evaluation.checkpoints[best],
                "images_done": done,
                "image_id": image_id,
                **{f"image_{name}_curve": json.dumps(image[name]) for name in CURVE_METRICS},
            }
        )


def sweep_inputs(dataset: Dataset, space: SearchSpace, base: S2SConfig, seed: int) -> tuple[list[str], TrainImages]:
    """Subset ids and what the trials evaluate on them: the loaded (id, noisy, clean) images, the
    noisy seed images of warm trials (the dataset's first `warm_images`, as a warm run takes them),
    the step checkpoints and the trials' fixed settings."""
    ids = subset_ids(dataset, space)
    images = [(image_id, *dataset.load(image_id)) for image_id in ids]
    seed_images = (
        [dataset.load(image_id)[0] for image_id in dataset.ids[: base.warm_images]] if "warm" in space.inits else []
    )
    checkpoints = step_checkpoints(space)
    base_fields = {
        **asdict(base),
        "steps": max(checkpoints),
        "passes": space.search_passes,
        "seed": seed,
        "log_every": max(checkpoints),
        "init": space.inits[0],
    }
    return ids, TrainImages(images, seed_images, base_fields, checkpoints, space.search_passes)


def make_trainable(evaluation: TrainImages | ReplayLandscape, space: SearchSpace):
    """The Tune trainable: `sweep_trial` with what it evaluates in the object store, and its resources."""
    return tune.with_resources(
        tune.with_parameters(sweep_trial, evaluation=evaluation, cpus=space.cpus_per_trial),
        {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial},
    )


def make_tuner(
    trainable,
    space: SearchSpace,
    trials: int,
    subset_size: int,
    seed: int,
    run_config: tune.RunConfig,
    sampler=None,
    concurrency: int | None = None,
) -> tune.Tuner:
    """The search: UniqueConfigSearch (Optuna, the paper point first; TPE unless `sampler` is
    given) and ASHA on images done, `trials` configurations at most."""
    searcher = UniqueConfigSearch(
        space=DefineSpace(space),
        metric=METRIC,
        mode="max",
        points_to_evaluate=[paper_point(space)],
        sampler=sampler or tpe_sampler(seed),
        grid=config_grid(space),
        seed=seed,
    )
    scheduler = ASHAScheduler(
        time_attr="images_done",
        max_t=subset_size,
        grace_period=space.grace_images,
        reduction_factor=space.reduction_factor,
    )
    tune_config = tune.TuneConfig(
        metric=METRIC,
        mode="max",
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=trials,
        max_concurrent_trials=concurrency or space.concurrency,
        reuse_actors=True,  # a new trial starts in a finished one's process: no second import of torch and the rest
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


@dataclass
class SweepOutcome:
    sweep_id: str
    best: dict  # the best run settings (also saved as OUT/DATASET/best_config.yaml)


def run_sweep(dataset: Dataset, space: SearchSpace, base: S2SConfig, options: SweepOptions) -> SweepOutcome:
    """Search p, steps and λ_IQA for `dataset`; save and return the best run settings."""
    if not dataset.has_clean:
        raise ConfigError(
            f"{dataset.name}: has no clean references, which the search scores against; run it with --config "
            "paper|FILE.yaml instead"
        )
    trials = space.trials if options.trials is None else options.trials
    if trials < 1:
        raise ConfigError(f"--trials {trials}: expected a budget of at least 1 trial")
    session = open_session(
        options.out,
        options.mlflow_uri,
        lambda sweep_id: f"{dataset.key}/sweeps/{sweep_id}",
        "sweep.json",
        options.sweep_id,
        options.resume,
    )
    store, uri, sweep_id = session.store, session.tracking_uri, session.id

    if not space.search["lambda_iqa"].fixed_zero:
        try:
            ensure_iqa_weights(base.iqa_weights)
        except IQAWeightsMissing as error:
            raise IQAWeightsMissing(
                f"{error}; or search without it: lambda_iqa: 0 under search: in {space.path}"
            ) from None
    connect_ray(options.address)
    ids, evaluation = sweep_inputs(dataset, space, base, options.seed)
    checkpoints = evaluation.checkpoints

    tracker = RunTracker(uri, f"s2s-sweep/{dataset.key}", store)
    params = {
        "dataset": dataset.name,
        "sweep_id": sweep_id,
        "space": str(space.path),
        "trials": trials,
        "subset": ",".join(ids),
        "step_checkpoints": ",".join(map(str, checkpoints)),
        "eval_passes": space.search_passes,
        "concurrency": space.concurrency,
        "cpus_per_trial": space.cpus_per_trial,
        "gpus_per_trial": space.gpus_per_trial,
        "grace_images": space.grace_images,
        "reduction_factor": space.reduction_factor,
        "seed": options.seed,
        "init": ",".join(space.inits),
    }
    parent_id = tracker.start(
        f"{dataset.name} sweep {trials} trials {sweep_id}",
        params,
        resume_run_id=session.record.get("mlflow_run_id"),
        kind="sweep",
    )
    write_record(session, "sweep.json", {"dataset": dataset.name, "sweep_id": sweep_id, "mlflow_run_id": parent_id})
    try:
        best = search(dataset, space, trials, session, tracker, ids, evaluation, options.seed)
    except BaseException as error:
        tracker.finish("KILLED" if stop_request(error) else "FAILED")
        raise
    tracker.finish("FINISHED")
    print(f"best: {best} -> {store.path(dataset.key + '/best_config.yaml')}", flush=True)
    print(f"MLflow: {tracker.ui_command()}", flush=True)
    return SweepOutcome(sweep_id, best)


def search(
    dataset: Dataset,
    space: SearchSpace,
    trials: int,
    session,
    tracker: RunTracker,
    ids: list[str],
    evaluation: TrainImages,
    seed: int,
) -> dict:
    """Run the Tune experiment (or restore it), write its tables, plots and best configuration."""
    store, sweep_id, folder, parent_id = session.store, session.id, session.folder, tracker.run_id
    checkpoints = evaluation.checkpoints
    trainable = make_trainable(evaluation, space)
    storage = store.path(folder)  # a path inside store.fs, which Tune writes through
    tune_path = f"{storage}/tune"
    callbacks = [
        MLflowLoggerCallback(
            tracking_uri=session.tracking_uri,
            experiment_name=f"s2s-sweep/{dataset.key}",
            tags={"mlflow.parentRunId": parent_id, "s2s_sweep.kind": "trial"},
        )
    ]
    if tune.Tuner.can_restore(tune_path, storage_filesystem=store.fs):
        print(f"sweep {sweep_id}: restoring from {tune_path}", flush=True)
        tuner = tune.Tuner.restore(
            tune_path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=store.fs
        )
    else:
        run_config = tune.RunConfig(
            name="tune", storage_path=storage, storage_filesystem=store.fs, callbacks=callbacks, verbose=1
        )
        tuner = make_tuner(trainable, space, trials, len(ids), seed, run_config)
    print(
        f"sweep {sweep_id}: {trials} trials on {len(ids)} images of {dataset.name} ({', '.join(ids)}), steps "
        f"{checkpoints[0]}..{checkpoints[-1]}",
        flush=True,
    )
    results = tuner.fit()

    trials_table, curves_table = sweep_tables(results, sweep_id, len(ids), checkpoints, space.inits[0])
    for name, table in (("trials", trials_table), ("curves", curves_table)):
        data = parquet_bytes(table)
        store.write_bytes(f"{folder}/{name}/dataset={dataset.key}/{name}.parquet", data)
        tracker.log_artifact_bytes(f"{name}.parquet", data)
    remove_duplicate_trial_runs(tracker, parent_id)
    best, selection = best_config(trials_table, curves_table, space)
    device, share = ("GPU", space.gpus_per_trial) if space.gpus_per_trial else ("CPU", space.cpus_per_trial)
    device_seconds = share * sum(
        trials_table.column("seconds").to_pylist()
    )  # what the search cost, to set against what it saves
    for name, png in sweep_plots(trials_table, curves_table, selection).items():
        tracker.log_artifact_bytes(name, png)
    best_yaml = yaml.safe_dump({**best, "selection": selection}, sort_keys=False).encode()
    store.write_bytes(f"{folder}/best_config.yaml", best_yaml)
    store.write_bytes(f"{dataset.key}/best_config.yaml", best_yaml)
    tracker.log_artifact_bytes("best_config.yaml", best_yaml)
    tracker.log_metrics(
        {
            "best_mean_psnr": selection["chosen_mean_psnr"],
            "best_peak_mean_psnr": selection["peak_mean_psnr"],
            "best_steps": selection["chosen_steps"],
            "best_peak_steps": selection["peak_steps"],
            "best_training_saved": selection["training_saved"],
            "trials_run": trials_table.num_rows,
            f"{device.lower()}_seconds": device_seconds,
        },
        step=trials_table.num_rows,
    )
    print(
        f"best: {best.get('init', 'cold')} p {best['p']}, λ_IQA {best['lambda_iqa']:g}: {selection['chosen_steps']} "
        f"steps at {selection['chosen_mean_psnr']:.2f} dB, "
        f"{selection['training_saved']:.0%} fewer than its peak ({selection['peak_steps']} steps, "
        f"{selection['peak_mean_psnr']:.2f} dB; within {space.steps_within_db} dB); "
        f"the search took {device_seconds:,.0f} {device}-seconds",
        flush=True,
    )
    return best


# Random draws before TPE models the results. Optuna's default, 10, made TPE random search within
# a 7-trial budget; on the landscape replay (benchmarks/bench_sweep.py) 3 matched or beat it on
# both noise kinds (median regret at 30% of the grid's compute 0.00 dB; PolyU: random 0.11 dB).
TPE_STARTUP_TRIALS = 3


def tpe_sampler(seed: int, startup_trials: int = TPE_STARTUP_TRIALS):
    """Optuna's TPE, modelling p and λ_IQA jointly; its first `startup_trials` trials (the paper point
    among them) are drawn at random."""
    return optuna.samplers.TPESampler(n_startup_trials=startup_trials, multivariate=True, group=True, seed=seed)


def sweep_tables(
    results, sweep_id: str, subset_size: int, checkpoints: list[int], default_init: str
) -> tuple[pa.Table, pa.Table]:
    """One row per trial, and one row per (trial, image, metric, step checkpoint) for the curves;
    the dataset is the tables' hive partition."""
    trial_rows, curve_rows = [], []
    for result in results:
        config, history = result.config, result.metrics_dataframe
        reports = [] if history is None else history.to_dict("records")
        last = reports[-1] if reports else {}
        images_done = int(last.get("images_done", 0))
        trial_id = result.path.rstrip("/").rsplit("/", 1)[-1]
        parts = trial_id.split("_")  # Tune names a trial's folder <trainable>_<id>_<creation index>_<params>_<date>
        number = int(parts[parts.index(last["trial_id"]) + 1]) if last.get("trial_id") in parts else None
        trial_rows.append(
            {
                "sweep_id": sweep_id,
                "trial_id": trial_id,
                "trial_number": number,
                "init": config.get("init", default_init),
                "p": config["p"],
                "lambda_iqa": trial_lambda(config),
                "steps": last.get("best_steps"),
                "images_done": images_done,
                METRIC: last.get(METRIC),
                "mean_ssim": last.get("mean_ssim"),
                "status": "error" if result.error else "ok",
                "error": str(result.error).splitlines()[-1][:500] if result.error else None,
                "early_stopped": result.error is None and images_done < subset_size,
                "seconds": float(last.get("time_total_s", 0.0)),
            }
        )
        for report in reports:
            for name in CURVE_METRICS:
                for step, value in zip(checkpoints, json.loads(report[f"image_{name}_curve"]), strict=True):
                    curve_rows.append(
                        {
                            "sweep_id": sweep_id,
                            "trial_id": trial_id,
                            "image_id": report["image_id"],
                            "metric": name,
                            "steps": step,
                            "value": value,
                        }
                    )
    return pa.Table.from_pylist(trial_rows), pa.Table.from_pylist(curve_rows, schema=CURVE_SCHEMA)


CURVE_SCHEMA = pa.schema(
    [
        ("sweep_id", pa.string()),
        ("trial_id", pa.string()),
        ("image_id", pa.string()),
        ("metric", pa.string()),
        ("steps", pa.int64()),
        ("value", pa.float64()),
    ]
)


def best_config(trials: pa.Table, curves: pa.Table, space: SearchSpace) -> tuple[dict, dict]:
    """The best trial that scored every subset image, as run settings (with the paper's pass
    count), at the fewest steps whose mean PSNR is within `steps_within_db` of its curve's peak
    (for a warm trial: the warm steps, its seed trained the largest checkpoint); and the record
    of that choice (peak, chosen point, training saved)."""
    rows = [r for r in trials.to_pylist() if r["status"] == "ok" and not r["early_stopped"] and r[METRIC] is not None]
    if not rows:
        raise NoTrialFinished(
            "no trial finished the whole subset; raise --trials or check the trials' errors in the trials table"
        )
    best = max(rows, key=lambda r: r[METRIC])
    curve = mean_psnr_curves(curves, [best["trial_id"]])[best["trial_id"]]
    peak_steps, peak = max(curve, key=lambda point: point[1])
    steps, psnr = min(
        (point for point in curve if point[1] >= peak - space.steps_within_db), key=lambda point: point[0]
    )
    selection = {
        "trial_id": best["trial_id"],
        "within_db": space.steps_within_db,
        "peak_steps": peak_steps,
        "peak_mean_psnr": round(peak, 4),
        "chosen_steps": steps,
        "chosen_mean_psnr": round(psnr, 4),
        "training_saved": round(1 - steps / peak_steps, 4),
    }
    settings = {
        "p": best["p"],
        "steps": steps,
        "lambda_iqa": best["lambda_iqa"],
        "passes": space.paper.get("passes", S2SConfig.passes),
    }
    if best.get("init") == "warm":
        settings |= {"init": "warm", "steps": step_checkpoints(space)[-1], "warm_steps": steps}
    return settings, selection


def remove_duplicate_trial_runs(tracker: RunTracker, parent_id: str) -> None:
    """A restored sweep restarts its unfinished trials, and Tune's MLflow callback opens a new child
    run for each: keep the newest run per trial and delete the older, partial ones."""
    runs = tracker.call(
        "search_runs",
        [tracker.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        order_by=["attributes.start_time DESC"],
    )
    seen = set()
    for run in runs or []:
        name = run.data.tags.get("trial_name")
        if name in seen:
            tracker.call("delete_run", run.info.run_id)
        seen.add(name)
