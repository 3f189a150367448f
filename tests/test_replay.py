"""The sweep replayed on a tabular landscape (trials look their curves up: s2s_sweep.sweep.ReplayLandscape;
that a replay makes a trained sweep's choices is tested in test_sweep.py), and bench_sweep.py on the
committed landscape table."""

import json
import os
import subprocess
import sys
from argparse import ArgumentTypeError, Namespace
from dataclasses import replace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from common import whole_grid  # noqa: E402

from s2s_sweep.configs import ConfigError, load_space
from s2s_sweep.sweep import LANDSCAPE, ReplayLandscape, range_values, read_landscape

LANDSCAPE_DIR = REPO / "benchmarks" / "results" / "landscape"


# one landscape read-out (an image at p after some steps); the tests below vary what they need
BASE_ROW = {
    "dataset": "demo",
    "image_id": "x",
    "p": 0.4,
    "steps": 4,
    "psnr": 30.0,
    "ssim": 0.9,
    "heldout_psnr": 20.0,
    "noisy_psnr": 20.0,
    "side": 96,
    "passes": 50,
    "precision": "fp32",
    "device": "cpu",
    "seed": 0,
    "seconds": 1.0,
}


def test_a_replay_asking_for_a_configuration_the_table_lacks_names_it():
    row = BASE_ROW
    replay = ReplayLandscape(pa.Table.from_pylist([row], schema=LANDSCAPE), ["x"], [4])
    assert list(replay.curves({"p": 0.4})) == [("x", {"psnr": [30.0], "ssim": [0.9], "heldout_psnr": [20.0]})]
    with pytest.raises(ConfigError, match=r"landscape: no curve for image x at p 0.5 and steps \[4\]"):
        list(replay.curves({"p": 0.5}))


def complete_kinds(table: pd.DataFrame) -> set[str]:
    """Kinds with two or more images of the whole p grid (0.30..0.95 by 0.05): one to search on, one to hold out."""
    images = table[whole_grid(table, 14)].groupby("dataset")["image_id"].nunique()
    return set(images[images >= 2].index)


@pytest.mark.slow
@pytest.mark.skipif(not list(LANDSCAPE_DIR.glob("*.parquet")), reason="no landscape table committed")
def test_bench_sweep_replays_seeds_on_the_committed_landscape(tmp_path):
    table = read_landscape(str(LANDSCAPE_DIR)).to_pandas()
    if not complete_kinds(table):
        pytest.skip("the committed landscape has no kind with two whole images yet")
    kind = sorted(complete_kinds(table))[0]  # one kind: seconds, not minutes
    out = tmp_path / "bench_sweep.json"
    command = [
        sys.executable,
        "benchmarks/bench_sweep.py",
        "--kinds",
        kind,
        "--seeds",
        "2",
        "--trials",
        "4",
        "--grace-images",
        "2",  # the space file says 1
        "--json",
        str(out),
        "--plot",
        str(tmp_path / "plot.png"),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
    }  # a script's own folder is its path; the packages are the repository's
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["kinds"]) == set(result["heldout_gain_db"]) == set(result["objective_spearman"]) == {kind}
    assert result["space"] == "benchmarks/bench_sweep_space.yaml"  # where it lies in any checkout
    assert result["grace_images"] == 2
    for kind in result["kinds"].values():
        strategies = kind["strategies"]
        assert set(strategies) == {"tpe_asha", "random_asha", "grid", "paper"}
        for name, row in strategies.items():
            assert (
                row["median_regret_db"] >= -1e-9 and row["regret_spread_db"] >= 0 and 0 <= row["compute_fraction"] <= 1
            ), name
            at_goal = row[
                "median_regret_at_goal_compute_db"
            ]  # None while a run had saved nothing by 30% of the grid's compute
            assert at_goal is None or at_goal >= -1e-9, name
        assert (
            strategies["grid"]["compute_fraction"] == 1 and strategies["grid"]["median_regret_db"] <= 0.05 + 1e-9
        )  # within steps_within_db of the optimum
        assert strategies["paper"]["compute_fraction"] == 0 and strategies["paper"]["heldout_gain_db"] == 0
        assert len(strategies["tpe_asha"]["runs"]) == 2 and strategies["tpe_asha"]["compute_fraction"] < 1
        assert -1 <= kind["objective_spearman"] <= 1 and "heldout_gain_db" in kind
    assert "held-out images the sweep's best" in done.stdout and (tmp_path / "plot.png").stat().st_size > 0
    assert "self-validation over 2 shuffles" in done.stdout  # its figures: the test below


def test_a_bad_grace_is_named():
    from bench_sweep import grace_of

    assert grace_of("2") == 2
    for text in ("0", "-1", "two"):
        with pytest.raises(ArgumentTypeError, match=rf"--grace-images '{text}': expected an integer >= 1"):
            grace_of(text)


def made_up_landscape(folder, kind: str, prefers: dict[str, float]) -> None:
    """A landscape of `kind` where image X peaks at p prefers[X] (4 dB per unit of p away from it) and
    gains a little with the steps: the search's choice on some images may hurt others."""
    rows = [
        BASE_ROW
        | {
            "dataset": kind,
            "image_id": image_id,
            "p": round(0.30 + 0.05 * index, 2),
            "steps": steps,
            "psnr": 30.0 - 4 * abs(0.30 + 0.05 * index - peak) + steps / 1600,
        }
        for image_id, peak in prefers.items()
        for index in range(14)
        for steps in range(100, 900, 100)
    ]
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=LANDSCAPE), folder / f"{kind}.parquet")


@pytest.mark.slow
def test_the_replayed_self_validation_runs_the_paper_where_the_best_is_not_shown(tmp_path, local_ray):
    # three images peak at p 0.3 and three at PolyU's paper p 0.7: a best found on one kind of image
    # is 1.6 dB worse than the paper on the other, and the validation (4 of 6) always holds both kinds.
    # bench_sweep's validation_replay in this process, on the shared Ray (its CLI is run just above)
    from bench_sweep import SPACE, complete_images, validation_replay

    prefers = {f"low{n}": 0.3 for n in range(3)} | {f"high{n}": 0.7 for n in range(3)}
    made_up_landscape(tmp_path / "landscape", "polyu", prefers)
    space = load_space(str(SPACE))
    space = replace(space, paper={**space.paper, "p": 0.7})  # as bench_kind sets the kind's paper p
    (table,) = complete_images(read_landscape(str(tmp_path / "landscape")), range_values(space.search["p"])).values()
    checked = validation_replay("polyu", table, space, Namespace(seeds=6, trials=4), str(tmp_path / "tune"))
    assert checked["images"] == {"validate": 4, "search": 1, "test": 1} and len(checked["runs"]) == 6
    for run in checked["runs"]:
        assert sorted(run["search"] + run["validate"] + run["test"]) == sorted(prefers)
        away = run["best"]["p"] != 0.7  # the search (on one image) left the paper's p
        assert run["shown"] == (not away)  # a validation holding both kinds catches it, and passes the paper's p
        assert run["test_gain_run_db"] == (run["test_gain_best_db"] if run["shown"] else 0.0)
    assert checked["shown"] == sum(run["shown"] for run in checked["runs"]) == checked["shown_paper_itself"]
    assert checked["test_gain_run_db"]["below_margin"] == 0 < checked["test_gain_best_db"]["below_margin"]
