"""A sweep from start to end: the session, MLflow's parent run, the Tune experiment (or its
restore), the tables, plots and best_config.yaml."""

from dataclasses import dataclass

import yaml
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback

from model.config import S2SConfig
from model.iqa_weights import IQAWeightsMissing, ensure_iqa_weights
from s2s_sweep.configs import ConfigError, SearchSpace, heldout_line, settings_to_run
from s2s_sweep.datasets import Dataset
from s2s_sweep.errors import stop_request
from s2s_sweep.objectives import MIN_AGREEMENT
from s2s_sweep.objectives import REGISTRY as OBJECTIVES
from s2s_sweep.plots import sweep_plots
from s2s_sweep.results import parquet_bytes
from s2s_sweep.run_settings import RunSettings
from s2s_sweep.session import connect_ray, open_session, write_record
from s2s_sweep.sweep.searcher import make_tuner
from s2s_sweep.sweep.selection import best_config
from s2s_sweep.sweep.tables import sweep_tables
from s2s_sweep.sweep.trial import TrainImages, make_trainable, sweep_inputs
from s2s_sweep.sweep.validation import validate_best
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


@dataclass
class SweepOutcome:
    sweep_id: str
    best: dict  # the best run settings (also saved as OUT/DATASET/best_config.yaml)
    heldout: dict  # its validation on the held-out images (sweep/validation.py)
    to_run: dict  # what `--config best` runs: the best, or the paper's configuration where not shown
    note: str | None  # where it is the paper's: the line that says so (configs.settings_to_run)


def run_sweep(
    dataset: Dataset,
    space: SearchSpace,
    base: S2SConfig,
    options: SweepOptions,
    run_settings: RunSettings = RunSettings(),
) -> SweepOutcome:
    """Search p, steps and λ_IQA for `dataset` from the settings `base` and `run_settings` (how
    outputs are quantized, how many images a warm trial's seed trains on); save and return the best."""
    objective = OBJECTIVES[space.objective]
    if objective.needs_clean and not dataset.has_clean:
        proxies = [name for name, value in space.agreement.items() if value >= MIN_AGREEMENT]
        raise ConfigError(
            f"{dataset.name}: has no clean references, which the objective {objective.name} ({space.path}) scores "
            "against; run it with --config paper|FILE.yaml instead"
            + (f", or search by search.objective: {proxies[0]}" if proxies else "")
        )
    trials = space.trials if options.trials is None else options.trials
    if trials < 1:
        raise ConfigError(f"--trials {trials}: expected a budget of at least 1 trial")
    if base.lr_decay:
        raise ConfigError(
            f"--set lr_decay={base.lr_decay:g}: a sweep reads one training at every step budget, and a learning rate "
            "falling towards the final step cannot be read out earlier; sweep with lr_decay=0"
        )
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
    ids, evaluation, heldout = sweep_inputs(dataset, space, base, run_settings, options.seed)
    checkpoints = evaluation.checkpoints

    tracker = RunTracker(uri, f"s2s-sweep/{dataset.key}", store)
    params = {
        "dataset": dataset.name,
        "sweep_id": sweep_id,
        "space": str(space.path),
        "objective": space.objective,
        "trials": trials,
        "subset": ",".join(ids),
        "heldout_images": ",".join(image_id for image_id, _, _ in heldout),
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
        best, validation = search(dataset, space, trials, session, tracker, ids, evaluation, heldout, options.seed)
    except BaseException as error:
        tracker.finish("KILLED" if stop_request(error) else "FAILED")
        raise
    tracker.finish("FINISHED")
    location = store.path(dataset.key + "/best_config.yaml")
    print(f"best: {best} -> {location}", flush=True)
    to_run, note = settings_to_run({**best, "heldout": validation}, space.paper, location)
    print(f"MLflow: {tracker.ui_command()}", flush=True)
    return SweepOutcome(sweep_id, best, validation, to_run, note)


def search(
    dataset: Dataset,
    space: SearchSpace,
    trials: int,
    session,
    tracker: RunTracker,
    ids: list[str],
    evaluation: TrainImages,
    heldout: list,
    seed: int,
) -> tuple[dict, dict]:
    """Run the Tune experiment (or restore it), write its tables, plots and best configuration,
    validate the best on the `heldout` images; the best and its `heldout:` block."""
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

    trials_table, curves_table = sweep_tables(results, sweep_id, len(ids), checkpoints, space.inits[0], space.objective)
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
    validation, scores = validate_best(best, space, heldout, evaluation.seed_images, evaluation.base)
    if scores.num_rows:
        data = parquet_bytes(scores)
        store.write_bytes(f"{folder}/heldout/dataset={dataset.key}/heldout.parquet", data)
        tracker.log_artifact_bytes("heldout.parquet", data)
    best_yaml = yaml.safe_dump({**best, "selection": selection, "heldout": validation}, sort_keys=False).encode()
    store.write_bytes(f"{folder}/best_config.yaml", best_yaml)
    store.write_bytes(f"{dataset.key}/best_config.yaml", best_yaml)
    tracker.log_artifact_bytes("best_config.yaml", best_yaml)
    tracker.log_metrics(
        {
            "best_score": selection["chosen_score"],
            "best_peak_score": selection["peak_score"],
            "best_steps": selection["chosen_steps"],
            "best_peak_steps": selection["peak_steps"],
            "best_training_saved": selection["training_saved"],
            "trials_run": trials_table.num_rows,
            "heldout_shown": int(validation["shown"]),
            **(
                {
                    "heldout_gain_db": validation["gain_db"],
                    "heldout_ci95_low_db": validation["ci95_db"][0],
                    "heldout_ci95_high_db": validation["ci95_db"][1],
                }
                if validation["gain_db"] is not None
                else {}
            ),
            f"{device.lower()}_seconds": device_seconds,
        },
        step=trials_table.num_rows,
    )
    unit = OBJECTIVES[space.objective].unit
    print(
        f"best: {best.get('init', 'cold')} p {best['p']}, λ_IQA {best['lambda_iqa']:g}: {selection['chosen_steps']} "
        f"steps at {space.objective} {selection['chosen_score']:.4g} {unit}, "
        f"{selection['training_saved']:.0%} fewer than its peak ({selection['peak_steps']} steps, "
        f"{selection['peak_score']:.4g} {unit}; within {space.steps_within} {unit}); "
        f"the search took {device_seconds:,.0f} {device}-seconds",
        flush=True,
    )
    print(f"held-out: {heldout_line(validation)}", flush=True)
    return best, validation


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
