"""The sweep replayed on a tabular landscape: the same Tune + Optuna + ASHA code, trials looking
curves up instead of training (s2s_sweep.sweep.ReplayLandscape), and bench_sweep.py on the
committed landscape table."""

import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pytest
import ray
from conftest import REPO
from ray import tune

from model.config import S2SConfig
from s2s_sweep.configs import ConfigError, load_space
from s2s_sweep.datasets import open_dataset
from s2s_sweep.sweep import (
    LANDSCAPE, ReplayLandscape, SweepOptions, best_config, make_trainable, make_tuner, read_landscape, run_sweep, subset_ids, sweep_tables,
)  # fmt: skip
from test_sweep import SPACE

LANDSCAPE_DIR = REPO / "benchmarks" / "results" / "landscape"


def landscape_of(trials: pd.DataFrame, curves: pd.DataFrame) -> pa.Table:
    """A sweep's own recorded curves as a landscape table: one row per (image, p, steps)."""
    wide = curves.pivot_table(index=["trial_id", "image_id", "steps"], columns="metric", values="value").reset_index()
    wide = wide.merge(trials[["trial_id", "p"]], on="trial_id")
    fixed = {"dataset": "demo", "noisy_psnr": 0.0, "side": 64, "passes": 2, "precision": "fp32", "device": "cpu", "seed": 0, "seconds": 0.0}
    return pa.Table.from_pylist([{**fixed, **row} for row in wide.drop(columns="trial_id").to_dict("records")], schema=LANDSCAPE)


def test_a_sweep_replayed_on_its_own_curves_makes_the_same_choices(tmp_path, monkeypatch):
    """Replay swaps only what a trial evaluates: on a table of the curves a trained sweep recorded,
    the same seed suggests the same configurations in the same order, ASHA stops the same ones
    and the same best comes out."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("concurrency: 2", "concurrency: 1"))  # one trial at a time: the order is the seed's alone
    space = load_space(path)
    dataset = open_dataset("demo")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        trained_best = run_sweep(dataset, space, S2SConfig(lambda_iqa=0.0), SweepOptions(out=str(tmp_path), sweep_id="trained", trials=5, seed=3)).best
        folder = tmp_path / "demo" / "sweeps" / "trained"
        trained = pd.read_parquet(folder / "trials").sort_values("trial_number")
        table = landscape_of(trained, pd.read_parquet(folder / "curves"))
        evaluation = ReplayLandscape(table, subset_ids(dataset, space), [4, 8, 12])
        run_config = tune.RunConfig(name="replay", storage_path=str(tmp_path / "replay"), verbose=0)
        results = make_tuner(make_trainable(evaluation, space), space, 5, len(evaluation.image_ids), 3, run_config).fit()
    finally:
        ray.shutdown()
    replayed_trials, replayed_curves = sweep_tables(results, "replay", len(evaluation.image_ids), [4, 8, 12], "cold")
    replayed = replayed_trials.to_pandas().sort_values("trial_number")
    assert replayed["p"].round(6).tolist() == trained["p"].round(6).tolist()
    assert replayed["images_done"].tolist() == trained["images_done"].tolist() and trained["early_stopped"].any()
    assert replayed["mean_psnr"].tolist() == pytest.approx(trained["mean_psnr"].tolist(), abs=1e-9)
    assert best_config(replayed_trials, replayed_curves, space)[0] == trained_best


def test_a_replay_asking_for_a_configuration_the_table_lacks_names_it():
    row = {"dataset": "demo", "image_id": "x", "p": 0.4, "steps": 4, "psnr": 30.0, "ssim": 0.9, "heldout_psnr": 20.0, "noisy_psnr": 20.0,
           "side": 64, "passes": 2, "precision": "fp32", "device": "cpu", "seed": 0, "seconds": 1.0}  # fmt: skip
    replay = ReplayLandscape(pa.Table.from_pylist([row], schema=LANDSCAPE), ["x"], [4])
    assert list(replay.curves({"p": 0.4})) == [("x", {"psnr": [30.0], "ssim": [0.9], "heldout_psnr": [20.0]})]
    with pytest.raises(ConfigError, match=r"landscape: no curve for image x at p 0.5 and steps \[4\]"):
        list(replay.curves({"p": 0.5}))


def complete_kinds(table: pd.DataFrame) -> set[str]:
    """Kinds with two or more images of the whole p grid (0.30..0.95 by 0.05): one to search on, one to hold out."""
    complete = table.groupby(["dataset", "image_id"])["p"].nunique().eq(14).groupby("dataset").sum()
    return set(complete[complete >= 2].index)


@pytest.mark.skipif(not list(LANDSCAPE_DIR.glob("*.parquet")), reason="no landscape table committed")
def test_bench_sweep_replays_seeds_on_the_committed_landscape(tmp_path):
    table = read_landscape(str(LANDSCAPE_DIR)).to_pandas()
    if not complete_kinds(table):
        pytest.skip("the committed landscape has no kind with two whole images yet")
    out = tmp_path / "bench_sweep.json"
    command = [sys.executable, "benchmarks/bench_sweep.py", "--seeds", "2", "--trials", "4", "--json", str(out), "--plot", str(tmp_path / "plot.png")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # a script's own folder is its path; the packages are the repository's
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["kinds"]) == complete_kinds(table)
    for kind in result["kinds"].values():
        strategies = kind["strategies"]
        assert set(strategies) == {"tpe_asha", "random_asha", "grid", "paper"}
        for name, row in strategies.items():
            assert row["median_regret_db"] >= -1e-9 and row["regret_spread_db"] >= 0 and 0 <= row["compute_fraction"] <= 1, name
        assert strategies["grid"]["compute_fraction"] == 1 and strategies["grid"]["median_regret_db"] <= 0.05 + 1e-9  # within steps_within_db of the optimum
        assert strategies["paper"]["compute_fraction"] == 0 and strategies["paper"]["heldout_gain_db"] == 0
        assert len(strategies["tpe_asha"]["runs"]) == 2 and strategies["tpe_asha"]["compute_fraction"] < 1
        assert -1 <= kind["objective_spearman"] <= 1 and "heldout_gain_db" in kind
    assert "held-out images the sweep's best" in done.stdout and (tmp_path / "plot.png").stat().st_size > 0
