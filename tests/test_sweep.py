"""The hyperparameter search: real Ray Tune, real Optuna, real MLflow, real Parquet."""

import signal
import subprocess
import sys
import time
from dataclasses import replace

import mlflow
import numpy as np
import optuna
import pandas as pd
import pyarrow as pa
import pytest
import torch
import yaml
from conftest import REPO, run_in_process
from PIL import Image
from ray import tune
from ray.tune.search import Searcher
from scipy import stats

from model.config import S2SConfig
from model.denoiser import denoise, denoise_at_steps, train_seed
from s2s_sweep.configs import SPACES_DIR, ConfigError, load_space, resolve_run_config, settings_to_run
from s2s_sweep.datasets import open_dataset
from s2s_sweep.images import to_uint8
from s2s_sweep.metrics import calculate_psnr
from s2s_sweep.plots import compute_front, mean_curves
from s2s_sweep.run_settings import image_seed
from s2s_sweep.sweep import (
    CURVE_SCHEMA,
    LANDSCAPE,
    DefineSpace,
    ReplayLandscape,
    SweepOptions,
    UniqueConfigSearch,
    best_config,
    config_grid,
    config_key,
    make_trainable,
    make_tuner,
    paper_point,
    run_sweep,
    step_checkpoints,
    subset_ids,
    sweep_tables,
    tpe_sampler,
)
from s2s_sweep.sweep.validation import paired_verdict, validate_best

SPACE = """
datasets: [demo]
paper: {p: 0.4, steps: 10, lambda_iqa: 0.0, passes: 4}
search:
  p: {low: 0.2, high: 0.8, step: 0.1}
  steps: {low: 4, high: 12, step: 4}
  lambda_iqa: 0
  passes: 2
subset: {size: 2, seed: 0}
budget: {trials: 4, concurrency: 2}
resources: {cpus_per_trial: 1, gpus_per_trial: 0}
early_stopping: {grace_images: 1, reduction_factor: 2}
"""


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_one_training_yields_the_whole_psnr_vs_steps_curve():
    image = np.random.default_rng(0).random((48, 48, 3), dtype=np.float32)
    config = S2SConfig(steps=99, passes=3, lambda_iqa=0.0, log_every=1)
    curve = denoise_at_steps(image, config, [2, 4], passes=3)
    for steps, (estimate, _) in zip([2, 4], curve, strict=True):  # equal to separate trainings of those lengths
        assert np.allclose(estimate, denoise(image, config.replace(steps=steps)).denoised, atol=1e-6)


def test_subset_checkpoints_and_paper_point(space_file):
    space = load_space(space_file)
    dataset = open_dataset("demo")
    assert subset_ids(dataset, space) == ["coffee", "immunohistochemistry"]  # seeded: the same subset every time
    assert step_checkpoints(space) == [4, 8, 12]
    assert paper_point(space) == {"p": 0.4}
    full = load_space(SPACES_DIR / "cbsd68.yaml")
    assert paper_point(full) == {"p": 0.4, "use_iqa": True, "lambda_iqa": 2e-8}


def test_a_subset_smaller_than_asha_grace_is_searched_without_early_stops(space_file, tmp_path):
    space = replace(load_space(space_file), grace_images=2)  # polyu.yaml's grace, on a one-image subset
    run_config = tune.RunConfig(name="small", storage_path=str(tmp_path), verbose=0)
    tuner = make_tuner(lambda config: None, space, 2, 1, 0, run_config)  # ASHA asserted grace <= max_t here
    assert isinstance(tuner, tune.Tuner)


def test_the_search_never_suggests_a_configuration_twice_and_ends_when_the_grid_is_exhausted(space_file):
    space = load_space(space_file)  # p from 0.2 to 0.8 by 0.1: 7 configurations
    grid = config_grid(space)
    assert [point["p"] for point in grid] == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    searcher = UniqueConfigSearch(
        space=DefineSpace(space),
        metric="score",
        mode="max",
        points_to_evaluate=[paper_point(space)],
        sampler=tpe_sampler(0),
        grid=grid,
        seed=0,
    )
    suggested = []
    for index in range(10):
        config = searcher.suggest(f"t{index}")
        if config == Searcher.FINISHED:
            break
        suggested.append(config["p"])
        searcher.on_trial_complete(
            f"t{index}", {"score": 30 - 10 * abs(config["p"] - 0.5)}
        )  # a peaked landscape: TPE repeats itself
    assert suggested[0] == 0.4  # the paper point first
    assert sorted(suggested) == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])  # each once, then the search ends
    withdrawn = [t for t in searcher._ot_study.trials if t.user_attrs.get("withdrawn")]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in withdrawn)


def test_the_best_takes_the_fewest_steps_within_the_tolerance_of_its_peak(space_file):
    space = load_space(space_file)
    trials = pa.Table.from_pylist(
        [
            {"trial_id": "a", "p": 0.4, "lambda_iqa": 0.0, "status": "ok", "early_stopped": False, "score": 30.00},
            {"trial_id": "b", "p": 0.6, "lambda_iqa": 0.0, "status": "ok", "early_stopped": False, "score": 29.00},
            {
                "trial_id": "c",
                "p": 0.2,
                "lambda_iqa": 0.0,
                "status": "ok",
                "early_stopped": True,
                "score": 31.00,
            },  # one image only
        ]
    )
    mean_curve = {
        "a": {4: 29.90, 8: 29.97, 12: 30.00},
        "b": {4: 29.95, 8: 29.00, 12: 28.00},
        "c": {4: 31.0, 8: 31.0, 12: 31.0},
    }
    curves = pa.Table.from_pylist(
        [
            {
                "sweep_id": "s",
                "trial_id": t,
                "image_id": image,
                "metric": "psnr",
                "steps": steps,
                "value": value + offset,
            }
            for t, curve in mean_curve.items()
            for steps, value in curve.items()
            for image, offset in (("x", 0.5), ("y", -0.5))
        ],
        schema=CURVE_SCHEMA,
    )
    best, selection = best_config(trials, curves, space)
    assert best == {
        "p": 0.4,
        "steps": 8,
        "lambda_iqa": 0.0,
        "passes": 4,
    }  # 29.97 is within 0.05 dB of the peak 30.00 at 12 steps
    assert selection["peak_steps"] == 12 and selection["training_saved"] == pytest.approx(1 / 3, abs=1e-4)
    front = compute_front(mean_curves(curves, ["a", "b"], "psnr"))
    assert [(steps, trial) for steps, _, trial in front] == [(4, "b"), (8, "a"), (12, "a")]


def landscape_of(trials: pd.DataFrame, curves: pd.DataFrame) -> pa.Table:
    """A sweep's own recorded curves as a landscape table: one row per (image, p, steps)."""
    wide = curves.pivot_table(index=["trial_id", "image_id", "steps"], columns="metric", values="value").reset_index()
    wide = wide.merge(trials[["trial_id", "p"]], on="trial_id")
    fixed = {
        "dataset": "demo",
        "noisy_psnr": 0.0,
        "side": 64,
        "passes": 2,
        "precision": "fp32",
        "device": "cpu",
        "seed": 0,
        "seconds": 0.0,
    }
    return pa.Table.from_pylist(
        [{**fixed, **row} for row in wide.drop(columns="trial_id").to_dict("records")], schema=LANDSCAPE
    )


@pytest.mark.slow
def test_sweep_on_demo_early_stops_records_everything_replays_and_feeds_run_config_best(
    local_ray, tmp_path, monkeypatch
):
    # Tune's MLflow callback calls mlflow.set_tracking_uri, which exports MLFLOW_TRACKING_URI;
    # set it here (to the default store) so monkeypatch removes it again for later tests.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        SPACE.replace("concurrency: 2", "concurrency: 1")
    )  # one trial at a time: the order is the seed's alone (for the replay)
    space = load_space(space_file)
    dataset = open_dataset("demo")
    best = run_sweep(
        dataset, space, S2SConfig(lambda_iqa=0.0), SweepOptions(out=str(tmp_path), sweep_id="s1", trials=6)
    ).best
    # the same search replayed on a table of the curves it recorded: ReplayLandscape for TrainImages, nothing else
    # swapped
    folder = tmp_path / "demo" / "sweeps" / "s1"
    trained = pd.read_parquet(folder / "trials").sort_values("trial_number")
    evaluation = ReplayLandscape(
        landscape_of(trained, pd.read_parquet(folder / "curves")), subset_ids(dataset, space), [4, 8, 12]
    )
    run_config = tune.RunConfig(name="replay", storage_path=str(tmp_path / "replay"), verbose=0)
    results = make_tuner(make_trainable(evaluation, space), space, 6, len(evaluation.image_ids), 0, run_config).fit()
    replayed_trials, replayed_curves = sweep_tables(
        results, "replay", len(evaluation.image_ids), [4, 8, 12], "cold", "psnr"
    )
    replayed = replayed_trials.to_pandas().sort_values("trial_number")
    assert replayed["p"].round(6).tolist() == trained["p"].round(6).tolist()  # the same suggestions in the same order
    assert replayed["images_done"].tolist() == trained["images_done"].tolist()  # ASHA stopped the same trials
    assert replayed["score"].tolist() == pytest.approx(trained["score"].tolist(), abs=1e-9)
    assert (trained["score"] == trained["mean_psnr"]).all() and set(trained["objective"]) == {"psnr"}
    assert best_config(replayed_trials, replayed_curves, space)[0] == best
    assert set(best) == {"p", "steps", "lambda_iqa", "passes"} and best["steps"] in (4, 8, 12) and best["passes"] == 4
    assert best["p"] in [
        0.2,
        0.3,
        0.4,
        0.5,
        0.6,
        0.7,
        0.8,
    ]  # as a user writes it, not 0.2 + 4 * 0.1 = 0.6000000000000001
    assert trained["p"].isin([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]).all()  # in the trials table too, for `WHERE p = 0.6`
    saved = yaml.safe_load((tmp_path / "demo" / "best_config.yaml").read_text())
    assert {k: v for k, v in saved.items() if k not in ("selection", "heldout")} == best
    assert saved["selection"]["chosen_steps"] == best["steps"] <= saved["selection"]["peak_steps"]
    assert saved["selection"]["objective"] == "psnr"
    assert saved["selection"]["chosen_score"] >= saved["selection"]["peak_score"] - 0.05

    trials = pd.read_parquet(tmp_path / "demo" / "sweeps" / "s1" / "trials")
    assert (
        len(trials) == 6 and set(trials["status"]) == {"ok"} and trials["p"].round(6).is_unique
    )  # no configuration trained twice
    assert trials["early_stopped"].any(), "ASHA stopped no trial"
    assert (trials["p"].round(6) == 0.4).sum() == 1  # the paper point was tried, once
    curves = pd.read_parquet(tmp_path / "demo" / "sweeps" / "s1" / "curves")
    assert set(curves["steps"]) == {4, 8, 12} and set(curves["metric"]) == {"psnr", "ssim", "heldout_psnr"}

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s2s-sweep/demo")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`s2s_sweep.kind` = 'sweep'")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 6 and all("score" in c.data.metrics for c in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "best_config.yaml",
        "trials.parquet",
        "curves.parquet",
        "score_vs_params.png",
        "score_vs_steps.png",
    } <= artifacts
    assert parent.data.metrics["cpu_seconds"] == pytest.approx(trials["seconds"].sum(), rel=1e-6)  # 1 CPU per trial
    assert parent.data.metrics["best_steps"] == best["steps"]
    assert parent.data.metrics["best_score"] == saved["selection"]["chosen_score"]
    assert parent.data.params["objective"] == "psnr"

    # run --config best: the best was validated on no image (subset.heldout 0), so it runs the paper's configuration
    assert saved["heldout"] == {
        "images": 0,
        "metric": "psnr",
        "paper": {"p": 0.4, "steps": 10, "lambda_iqa": 0.0, "passes": 4},  # this space's, not demo.yaml's
        "gain_db": None,
        "ci95_db": None,
        "shown": False,
        "why": f"0 held-out images (subset.heldout in {space_file}), fewer than 4",
    }
    done = run_in_process(
        "s2s_sweep.run", "demo", "--config", "best", "--limit", "1", "--set", "passes=2", "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = [d for d in (tmp_path / "demo").iterdir() if d.name not in ("sweeps", "best_config.yaml")]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["p"], saved["steps"], saved["lambda_iqa"]) == (0.4, 10, 0.0)  # the demo family's paper:
    assert "the sweep's best is not validated: 0 held-out images" in done.stdout
    assert "running the paper's configuration" in done.stdout


def test_sweep_bad_inputs(space_file, tmp_path):
    space = load_space(space_file)
    with pytest.raises(ConfigError, match="--trials 0: expected a budget of at least 1 trial"):
        run_sweep(open_dataset("demo"), space, S2SConfig(), SweepOptions(out=str(tmp_path), trials=0))
    with pytest.raises(ConfigError, match="--set lr_decay=0.3: a sweep reads one training at every step budget"):
        run_sweep(open_dataset("demo"), space, S2SConfig(lr_decay=0.3), SweepOptions(out=str(tmp_path)))
    folder = tmp_path / "noisy"
    folder.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "a.png")
    with pytest.raises(ConfigError, match="has no clean references.*--config paper"):
        run_sweep(open_dataset(f"folder:{folder}"), space, S2SConfig(), SweepOptions(out=str(tmp_path)))
    done = run_in_process("s2s_sweep.run", "demo", "--sweep", "--space", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "missing.yaml: search-space file not found" in done.stderr
    unreachable = ["demo", "--sweep", "--space", str(space_file), "--mlflow-uri", "http://127.0.0.1:1"]
    done = run_in_process("s2s_sweep.run", *unreachable, "--out", str(tmp_path))
    assert done.returncode == 2 and "MLflow server not reachable" in done.stderr


def test_the_verdict_is_the_rule_on_the_paired_differences():
    differences = [0.2, 0.35, 0.1, 0.25, 0.3]
    verdict = paired_verdict(differences, [0.0] * 5)
    low, high = stats.t.interval(0.95, 4, loc=np.mean(differences), scale=stats.sem(differences))
    assert verdict == {
        "gain_db": round(np.mean(differences), 4),
        "ci95_db": [round(low, 4), round(high, 4)],
        "shown": True,
    }
    assert (
        paired_verdict([-0.5, 0.4, -0.2, 0.1], [0.0] * 4)["shown"] is False
    )  # the mean may be near 0, the interval is wide
    assert paired_verdict([-0.05, -0.04, -0.06, -0.05], [0.0] * 4)["shown"] is True  # equal within the rule's -0.1 dB


def test_config_best_runs_the_best_only_where_its_validation_showed_it(tmp_path):
    paper = {"p": 0.4, "steps": 500, "lambda_iqa": 0.0, "passes": 50}
    best = {"p": 0.6, "steps": 300, "lambda_iqa": 0.0, "passes": 50, "selection": {"objective": "psnr"}}
    shown = {"images": 4, "metric": "psnr", "gain_db": 0.4, "ci95_db": [0.1, 0.7], "shown": True}
    assert settings_to_run({**best, "heldout": shown}, paper, "X") == ({k: best[k] for k in paper}, None)
    assert settings_to_run(best, paper, "X")[0] == {k: best[k] for k in paper}  # saved before validation existed
    not_shown = shown | {"gain_db": -0.3, "ci95_db": [-0.9, 0.3], "shown": False, "why": "the interval's lower end"}
    values, note = settings_to_run({**best, "heldout": not_shown}, paper, "OUT/demo/best_config.yaml")
    assert values == paper and note.startswith("OUT/demo/best_config.yaml: the sweep's best − the paper's")
    recorded = {**paper, "steps": 10}  # the paper configuration of the space the sweep ran with
    assert settings_to_run({**best, "heldout": not_shown | {"paper": recorded}}, paper, "X")[0] == recorded
    assert "-0.30 dB [-0.90, +0.30] (psnr, 4 images the search did not see)" in note
    saved = tmp_path / "best_config.yaml"
    saved.write_text(yaml.safe_dump({**best, "heldout": not_shown}))
    assert resolve_run_config("demo", str(saved), [], ("unused", None))["p"] == 0.6  # a file given: run as it says


@pytest.mark.slow
def test_the_best_is_validated_on_held_out_images_against_the_paper(local_ray, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rng = np.random.default_rng(0)
    noisy_dir, clean_dir = tmp_path / "noisy", tmp_path / "clean"
    for folder in (noisy_dir, clean_dir):
        folder.mkdir()
    for index in range(5):  # smooth images with σ 25 noise: 1 to search, 4 held out
        x = np.linspace(0, 1, 40)
        clean = (np.stack([np.outer(np.sin(3 * x + index), x)] * 3, -1) * 0.4 + 0.3) * 255
        noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255)
        Image.fromarray(clean.round().astype(np.uint8)).save(clean_dir / f"i{index}.png")
        Image.fromarray(noisy.round().astype(np.uint8)).save(noisy_dir / f"i{index}.png")
    dataset = open_dataset(f"folder:{noisy_dir}", clean_dir=str(clean_dir))
    space_file = tmp_path / "validated.yaml"
    space_file.write_text(
        SPACE.replace("subset: {size: 2, seed: 0}", "subset: {size: 5, seed: 0, heldout: 4}")
        .replace("high: 0.8, step: 0.1", "high: 0.3, step: 0.1")
        .replace("paper: {p: 0.4, steps: 10,", "paper: {p: 0.95, steps: 1,")  # a poor reference: shown
    )
    space = load_space(space_file)
    outcome = run_sweep(dataset, space, S2SConfig(lambda_iqa=0.0), SweepOptions(out=str(tmp_path), sweep_id="v"))
    sweep = tmp_path / dataset.key / "sweeps" / "v"
    trials = pd.read_parquet(sweep / "trials")
    searched = set(pd.read_parquet(sweep / "curves")["image_id"])
    scores = pd.read_parquet(sweep / "heldout").pivot(index="image_id", columns="settings", values="value")
    assert len(searched) == 1 and len(scores) == 4 and not searched & set(scores.index)  # never searched
    assert len(trials) == 3  # the paper point (p 0.95), then the grid's p 0.2 and 0.3
    saved = yaml.safe_load((sweep / "best_config.yaml").read_text())
    block = saved["heldout"]
    assert block == outcome.heldout and block["images"] == 4 and block["metric"] == "psnr"
    assert block | paired_verdict(list(scores["best"]), list(scores["paper"])) == block  # the verdict of those scores
    assert block["shown"] and block["gain_db"] > 1  # 1 step at p 0.95 against the best's steps
    assert outcome.to_run == {k: saved[k] for k in ("p", "steps", "lambda_iqa", "passes")}
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name(f"s2s-sweep/{dataset.key}").experiment_id], "tags.`s2s_sweep.kind` = 'sweep'"
    )
    assert parent.data.metrics["heldout_gain_db"] == block["gain_db"] and parent.data.metrics["heldout_shown"] == 1
    assert parent.data.params["heldout_images"] == ",".join(sorted(scores.index))


@pytest.mark.slow
def test_a_warm_best_is_validated_from_one_seed_network_trained_on_the_warm_images(local_ray, tmp_path):
    space_file = tmp_path / "warm.yaml"
    space_file.write_text(WARM_SPACE)
    space = load_space(space_file)
    demo = open_dataset("demo")
    images = [(image_id, *demo.load(image_id)) for image_id in demo.ids]  # 4 "held-out" images
    base = {"lambda_iqa": 0.0, "seed": 0, "log_every": 12, "precision": "fp32"}
    warm = {"p": 0.4, "steps": 12, "lambda_iqa": 0.0, "passes": 4, "init": "warm", "warm_steps": 4}
    block, scores = validate_best(warm, space, images, [images[0][1]], base)
    scores = scores.to_pandas().pivot(index="image_id", columns="settings", values="value")
    torch.set_num_threads(int(space.cpus_per_trial))  # as the validation's tasks train: a CPU's thread
    # count changes the order of its float sums, which 12 steps make visible (1e-3 dB on AVX512 CPUs)
    seed = train_seed([images[0][1]], S2SConfig(**base, p=0.4, steps=12, passes=2))
    noisy, clean = images[1][1:]
    config = S2SConfig(**base, p=0.4, steps=12, passes=2).replace(seed=image_seed(0, images[1][0]))  # as a run would
    ((estimate, _),) = denoise_at_steps(noisy, config, [4], 2, seed)
    assert scores.loc[images[1][0], "best"] == pytest.approx(calculate_psnr(to_uint8(estimate), clean), abs=1e-6)
    assert block["images"] == 4 and block | paired_verdict(list(scores["best"]), list(scores["paper"])) == block


@pytest.mark.slow
def test_a_folder_without_clean_images_is_swept_by_the_heldout_score_where_the_space_allows_it(
    local_ray, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    folder = tmp_path / "noisy"
    folder.mkdir()
    demo = open_dataset("demo")
    for image_id in demo.ids[:2]:
        Image.fromarray((demo.load(image_id)[0] * 255).round().astype(np.uint8)).save(folder / f"{image_id}.png")
    dataset = open_dataset(f"folder:{folder}")
    space_file = tmp_path / "heldout.yaml"
    space_file.write_text(
        SPACE.replace("search:\n", "search:\n  objective: heldout\n  agreement: {heldout: 0.9}\n").replace(
            "high: 0.8, step: 0.1", "high: 0.5, step: 0.1"
        )
    )
    space = load_space(space_file)
    best = run_sweep(dataset, space, S2SConfig(lambda_iqa=0.0), SweepOptions(out=str(tmp_path), sweep_id="h")).best
    sweep = tmp_path / dataset.key / "sweeps" / "h"
    trials, curves = pd.read_parquet(sweep / "trials"), pd.read_parquet(sweep / "curves")
    assert set(curves["metric"]) == {"heldout_psnr"}  # PSNR and SSIM need the clean images this folder lacks
    assert set(trials["objective"]) == {"heldout"} and trials["mean_psnr"].isna().all()
    finished = trials[~trials["early_stopped"]]
    best_trial = finished.loc[finished["score"].idxmax()]
    heldout = curves[curves["trial_id"] == best_trial["trial_id"]].groupby("steps")["value"].mean()
    assert best_trial["score"] == pytest.approx(heldout.max())  # the score is the held-out curve's peak mean
    saved = yaml.safe_load((sweep / "best_config.yaml").read_text())
    assert saved["selection"]["objective"] == "heldout" and saved["p"] == best["p"] == best_trial["p"]


@pytest.mark.slow
def test_a_sweep_terminated_mid_way_is_killed_in_mlflow_then_restores_and_finishes_without_duplicates(
    ray_head, tmp_path
):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        SPACE.replace("steps: {low: 4, high: 12, step: 4}", "steps: {low: 8, high: 24, step: 8}")
    )  # trials long enough to stop one mid-way
    command = [
        sys.executable,
        "-m",
        "s2s_sweep.run",
        "demo",
        "--sweep-only",
        "--space",
        str(space_file),
        "--trials",
        "4",
        "--out",
        str(tmp_path),
        "--address",  # a driver of the shared head, as `ray job submit` starts it: no local Ray start-up per driver
        ray_head["gcs"],
    ]
    # Tune copies results to the sweep folder only when it saves its state: every 10 s by default, which the demo sweep
    # outruns
    env = {**ray_head["env"], "MLFLOW_TRACKING_URI": "", "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file, not a pipe nobody reads until the end
        driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    sweep_id = next(line for line in driver.stdout if line.startswith("sweep ")).split()[1].rstrip(":")
    tune_dir = tmp_path / "demo" / "sweeps" / sweep_id / "tune"
    deadline = time.monotonic() + 300
    while sum(f.read_text().count("\n") for f in tune_dir.glob("*/result.json")) < 2:  # two reports in
        assert time.monotonic() < deadline, "no trial reported in time"
        time.sleep(0.5)
    reported = time.time()
    while not any(
        f.stat().st_mtime > reported for f in tune_dir.glob("experiment_state-*.json")
    ):  # Tune saved its state after that
        assert time.monotonic() < deadline, "Tune saved no experiment state in time"
        time.sleep(0.5)
    driver.send_signal(signal.SIGTERM)  # as `ray job stop` does: the driver exits at once, without Ray's shutdown
    driver.wait(timeout=60)
    assert driver.returncode == 143, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert not (tmp_path / "demo" / "sweeps" / sweep_id / "best_config.yaml").exists()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s2s-sweep/demo")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`s2s_sweep.kind` = 'sweep'")
    assert parent.info.status == "KILLED"

    resumed = subprocess.run(
        [*command, "--resume", sweep_id], cwd=REPO, capture_output=True, text=True, timeout=600, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"sweep {sweep_id}: restoring" in resumed.stdout
    trials = pd.read_parquet(tmp_path / "demo" / "sweeps" / sweep_id / "trials")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    parents = client.search_runs([experiment.experiment_id], "tags.`s2s_sweep.kind` = 'sweep'")
    assert [p.info.status for p in parents] == ["FINISHED"]  # the restored sweep continued its parent run
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    names = [c.data.tags["trial_name"] for c in children]
    assert len(names) == len(set(names)) == 4


@pytest.mark.slow
def test_crashing_trials_do_not_kill_the_sweep(local_ray, space_file, tmp_path):
    folder, clean = tmp_path / "noisy", tmp_path / "clean"
    rng = np.random.default_rng(0)
    for name, side in (("a_tiny", 20), ("b_big", 64)):  # every trial crashes on its first image, the tiny one
        for where in (folder, clean):
            where.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(where / f"{name}.png")
    done = run_in_process(
        "s2s_sweep.run",
        f"folder:{folder}",
        "--clean-dir",
        str(clean),
        "--sweep-only",
        "--space",
        str(space_file),
        "--trials",
        "2",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.returncode == 1 and "no trial finished the whole subset" in done.stderr.strip().splitlines()[-1]
    (sweep_dir,) = (tmp_path / "out").glob("folder-noisy-*/sweeps/*")
    trials = pd.read_parquet(sweep_dir / "trials")
    assert len(trials) == 2 and set(trials["status"]) == {"error"}
    assert trials["error"].str.contains("too small").all()


IQA_SPACE = (
    SPACE.replace("lambda_iqa: 0\n", "lambda_iqa: {low: 1.0e-9, high: 1.0e-7, log: true, allow_zero: true}\n")
    .replace(
        "paper: {p: 0.4, steps: 10, lambda_iqa: 0.0, passes: 4}",
        "paper: {p: 0.4, steps: 4, lambda_iqa: 2.0e-8, passes: 2}",
    )
    .replace("steps: {low: 4, high: 12, step: 4}", "steps: {low: 2, high: 4, step: 2}")
    .replace("subset: {size: 2, seed: 0}", "subset: {size: 1, seed: 0}")
)


@pytest.mark.slow
def test_run_with_sweep_searches_lambda_iqa_then_runs_the_dataset_with_the_best(
    local_ray, tmp_path, iqa_weights_dir, monkeypatch
):
    space = tmp_path / "iqa_space.yaml"
    space.write_text(IQA_SPACE)
    out = tmp_path / "out"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # set but empty, as CI leaves it: the store beside the outputs
    done = run_in_process(
        "s2s_sweep.run",
        "demo",
        "--sweep",
        "--space",
        str(space),
        "--trials",
        "2",
        "--limit",
        "2",
        "--iqa-weights",
        iqa_weights_dir,
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = (out / "demo" / "sweeps").iterdir()
    trials = pd.read_parquet(sweep_dir / "trials")
    assert len(trials) == 2 and (trials["lambda_iqa"] == 2e-8).any()  # the paper point trained with the IQA loss
    best = yaml.safe_load((out / "demo" / "best_config.yaml").read_text())
    assert best["heldout"]["shown"] is False  # one demo image searched, none held out: the set runs the paper's
    (run_dir,) = [d for d in (out / "demo").iterdir() if d.is_dir() and d.name != "sweeps"]
    frame = pd.read_parquet(run_dir / "results")
    assert len(frame) == 2 and set(frame["status"]) == {"ok"}
    assert (frame["lambda_iqa"] == 2e-8).all() and (frame["steps"] == 4).all()  # the space's paper:
    assert "running the paper's configuration" in done.stdout
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("s2s-sweep/demo").experiment_id], "tags.`s2s_sweep.kind` = 'dataset-run'"
    )
    assert [r.data.params["config_source"] for r in runs] == [f"paper (sweep {sweep_dir.name}'s best not shown)"]


WARM_SPACE = (
    SPACE.replace("  lambda_iqa: 0\n", "  lambda_iqa: 0\n  init: [cold, warm]\n")
    .replace("p: {low: 0.2, high: 0.8, step: 0.1}", "p: {low: 0.4, high: 0.5, step: 0.1}")
    .replace("subset: {size: 2, seed: 0}", "subset: {size: 1, seed: 0}")
)


@pytest.mark.slow
def test_the_start_is_a_dimension_warm_trials_train_their_seed_once_and_the_best_records_warm_steps(
    local_ray, tmp_path, monkeypatch
):
    space_path = tmp_path / "warm.yaml"
    space_path.write_text(WARM_SPACE)
    space = load_space(space_path)
    assert space.inits == ("cold", "warm") and paper_point(space) == {"p": 0.4, "init": "cold"}
    assert sorted(config_key(point) for point in config_grid(space)) == sorted(
        config_key({"init": init, "p": p}) for init in ("cold", "warm") for p in (0.4, 0.5)
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(WARM_SPACE.replace("init: [cold, warm]", "init: [cold, hot]"))
    with pytest.raises(ConfigError, match=r"bad.yaml: search.init: expected a list of cold and/or warm"):
        load_space(bad)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    best = run_sweep(
        open_dataset("demo"),
        space,
        S2SConfig(lambda_iqa=0.0),
        SweepOptions(out=str(tmp_path), sweep_id="w", trials=4),
    ).best
    trials = pd.read_parquet(tmp_path / "demo" / "sweeps" / "w" / "trials")
    assert sorted(zip(trials["init"], trials["p"].round(6))) == [
        ("cold", 0.4),
        ("cold", 0.5),
        ("warm", 0.4),
        ("warm", 0.5),
    ]  # the grid, each once
    if best.get("init") == "warm":
        assert best["steps"] == 12 and best["warm_steps"] in (4, 8, 12)
    else:
        assert "warm_steps" not in best and best["steps"] in (4, 8, 12)
    warm, cold = (trials[trials["init"] == kind].sort_values("p")["mean_psnr"].to_numpy() for kind in ("warm", "cold"))
    assert (warm != cold).all()  # the warm trials started from their seed, not from a fresh network


def test_the_best_of_a_warm_trial_is_its_seed_steps_and_the_fewest_warm_steps_near_its_peak(space_file):
    space = load_space(space_file)
    trials = pa.Table.from_pylist(
        [
            {
                "trial_id": "w",
                "init": "warm",
                "p": 0.5,
                "lambda_iqa": 0.0,
                "status": "ok",
                "early_stopped": False,
                "score": 30.0,
            }
        ]
    )
    curves = pa.Table.from_pylist(
        [
            {"sweep_id": "s", "trial_id": "w", "image_id": "x", "metric": "psnr", "steps": steps, "value": value}
            for steps, value in ((4, 29.0), (8, 29.98), (12, 30.0))
        ],
        schema=CURVE_SCHEMA,
    )
    best, selection = best_config(trials, curves, space)
    assert best == {"p": 0.5, "steps": 12, "lambda_iqa": 0.0, "passes": 4, "init": "warm", "warm_steps": 8}
    assert selection["chosen_steps"] == 8
