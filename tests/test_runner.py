"""The dataset runner on a real local Ray, with real Parquet files and a real MLflow SQLite store."""

import tempfile

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import run_in_process, run_module
from PIL import Image

from model.config import S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.methods import Method, denoise_image
from s2s_sweep.metrics import calculate_psnr
from s2s_sweep.results import read_results
from s2s_sweep.run_settings import RunSettings, image_seed
from s2s_sweep.runner import Progress, RunOptions, run_dataset
from s2s_sweep.store import OutputStore

FAST = S2SConfig(steps=3, passes=2, lambda_iqa=0.0)


pytestmark = pytest.mark.usefixtures("local_ray")  # every test here runs on it, or refuses before it would


def test_demo_run_writes_images_parquet_and_mlflow_then_resumes_without_duplicates(tmp_path, capsys):
    dataset = open_dataset("demo").select(limit=3)
    options = RunOptions(out=str(tmp_path), run_id="r1", flush_seconds=0)
    table = run_dataset(dataset, Method(config=FAST), options).table
    assert sorted(table.column("image_id").to_pylist()) == list(dataset.ids)
    assert set(table.column("status").to_pylist()) == {"ok"}
    run_dir = tmp_path / "demo" / "r1"
    for image_id in dataset.ids:
        assert np.asarray(Image.open(run_dir / "images" / f"{image_id}.png")).shape == (64, 64, 3)
    assert (run_dir / "config.yaml").is_file()

    frame = pd.read_parquet(run_dir / "results")
    assert len(frame) == 3 and set(frame["dataset"].astype(str)) == {"demo"}
    row = frame.iloc[0]
    assert (
        row["psnr"] > 0
        and row["noisy_psnr"] > 0
        and row["steps"] == 3
        and row["device"] == "cpu"
        and row["quantize"] == "round"
    )
    assert row["node"] and row["code_version"] and len(row["config_hash"]) == 12
    assert (
        -1 <= row["ssim_3d"] <= 1 and 0 < row["noisy_ssim_3d"] < 1
    )  # both SSIM conventions recorded (3 steps do not denoise)
    assert row["ema_decay"] == 0.0  # the raw weights, the paper's read-out
    assert (frame["seed"] == 0).all() and list(frame["image_seed"]) == [image_seed(0, i) for i in frame["image_id"]]
    output = capsys.readouterr().out
    assert "[3/3]" in output and "ETA" in output and "mlflow ui --backend-store-uri" in output

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s2s-sweep/demo")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3's UI opens on the runs
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["steps"] == "3" and run.data.params["images"] == "3"
    assert (
        run.info.run_name == "demo S2S+ p=0.4 steps=3 passes=2 λ=0 r1"
    )  # dataset, method and key settings in the UI's list
    assert run.data.metrics["final_mean_psnr"] == pytest.approx(frame["psnr"].mean())
    assert "images_per_hour" in run.data.metrics and "cpu_hours" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "mean_ssim")] == [1, 2, 3]  # running mean
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "results.parquet",
        "config.yaml",
        "contact_sheet.png",
    }

    # resume the same run on a larger selection: only the new image is computed, none twice
    table = run_dataset(
        open_dataset("demo").select(limit=4),
        Method(config=FAST),
        RunOptions(out=str(tmp_path), run_id="r1", flush_seconds=0),
    ).table
    ids = table.column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == 4
    assert len(client.search_runs([experiment.experiment_id])) == 1  # the same MLflow run continued


def test_bad_images_become_failed_rows_and_the_rest_goes_on(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "good.png")
    Image.fromarray(rng.integers(0, 256, (16, 64, 3), dtype=np.uint8)).save(folder / "small.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    table = run_dataset(
        open_dataset(f"folder:{folder}"),
        Method(config=FAST),
        RunOptions(out=str(tmp_path / "out"), run_id="r", flush_seconds=0),
    ).table
    rows = {row["image_id"]: row for row in table.to_pylist()}
    assert rows["good"]["status"] == "ok" and rows["good"]["psnr"] is None  # no reference, no metric
    assert rows["corrupt"]["status"] == "failed" and "corrupt.png: cannot decode" in rows["corrupt"]["error"]
    assert rows["small"]["status"] == "failed" and "too small" in rows["small"]["error"]


def test_a_changed_configuration_cannot_resume_a_run(tmp_path):
    dataset = open_dataset("demo").select(limit=1)
    run_dataset(dataset, Method(config=FAST), RunOptions(out=str(tmp_path), run_id="r", flush_seconds=0))
    with pytest.raises(ValueError, match="run r: its config.yaml differs"):
        run_dataset(dataset, Method(config=FAST.replace(steps=4)), RunOptions(out=str(tmp_path), run_id="r"))


def test_resume_of_an_unknown_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--resume nope: nothing to resume"):
        run_dataset(
            open_dataset("demo").select(limit=1),
            Method(config=FAST),
            RunOptions(out=str(tmp_path), run_id="nope", resume=True),
        )


def test_gpus_requested_on_a_cluster_without_gpus(tmp_path):
    with pytest.raises(ValueError, match="--gpus-per-image 0.5: the Ray cluster has no GPUs"):
        run_dataset(
            open_dataset("demo").select(limit=1), Method(config=FAST), RunOptions(out=str(tmp_path), gpus_per_image=0.5)
        )


def test_output_root_given_as_a_filesystem_uri(tmp_path):
    table = run_dataset(
        open_dataset("demo").select(limit=1),
        Method(config=FAST),
        RunOptions(out=(tmp_path / "o").as_uri(), run_id="u", flush_seconds=0),
    ).table
    assert table.num_rows == 1
    assert len(pd.read_parquet(tmp_path / "o" / "demo" / "u" / "results")) == 1
    assert (tmp_path / "o" / "demo" / "u" / "images" / f"{open_dataset('demo').ids[0]}.png").is_file()


def test_unwritable_output_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError, match="cannot write there"):
        OutputStore(str(blocker / "out")).check_writable()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["cbsd68-30"], "unknown dataset 'cbsd68-30'; known: cbsd68-15"),
        (["demo", "--set", "p=1.5"], "--set: p: expected a probability in (0, 1), got 1.5"),
        (["demo", "--set", "steps=0"], "--set: steps: expected an integer >= 1"),
        (["demo", "--set", "lambda_iqa=-1"], "--set: lambda_iqa: expected a number >= 0"),
        (["demo", "--set", "passes=0"], "--set: passes: expected an integer >= 1"),
        (["demo", "--set", "dropout=0.3"], "--set dropout=0.3: expected key=value with key among p, steps"),
        (["demo", "--config", "best"], "--config best: no saved best configuration at"),
        (["demo", "--address", "127.0.0.1:1"], "Ray address 127.0.0.1:1: not reachable"),
        (
            ["demo", "--mlflow-uri", "http://127.0.0.1:1"],
            "--mlflow-uri http://127.0.0.1:1: MLflow server not reachable",
        ),
        (  # a store MLflow's client refuses as it opens (it raised a traceback before)
            ["demo", "--mlflow-uri", "nosuch://tracking"],
            "--mlflow-uri nosuch://tracking: cannot use the tracking store",
        ),
    ],
)
def test_bad_input_gets_a_one_line_error_before_any_training(tmp_path, args, expected):
    if "--address" in args:  # this module's own Ray is up: an address must be tried by a process without one
        done = run_module("s2s_sweep.run", *args, "--out", str(tmp_path), timeout=60)
    else:
        done = run_in_process("s2s_sweep.run", *args, "--out", str(tmp_path))
    stderr = done.stderr
    assert done.returncode == 2 and "Traceback" not in stderr, stderr
    assert expected in stderr.strip().splitlines()[-1]
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").rglob("*.png"))


def test_an_image_too_large_for_any_plan_becomes_a_failed_row_before_it_starts(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((2048, 4096, 3), np.uint8)).save(folder / "huge.png")  # only its header is read
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "small.png")
    outcome = run_dataset(
        open_dataset(f"folder:{folder}"),
        Method(config=FAST.replace(memory_mb=1200)),
        RunOptions(out=str(tmp_path / "out"), flush_seconds=0),
    )
    rows = {row["image_id"]: row for row in outcome.table.to_pylist()}
    assert rows["huge"]["status"] == "failed" and outcome.exit_status == 1
    assert (
        "huge: 2048x4096 pixels needs at least" in rows["huge"]["error"]
        and "more than the 1,200 MB budget" in rows["huge"]["error"]
    )
    assert rows["small"]["status"] == "ok" and rows["small"]["crop"] == 0 and rows["small"]["tile"] == 0
    assert 500 < rows["small"]["memory_mb"] < 1200 and rows["small"]["precision"] == FAST.precision_on("cpu")


@pytest.mark.slow
def test_images_go_largest_first_so_a_late_big_photo_keeps_no_cluster_waiting(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, side in (("a_small", 64), ("b_large", 160), ("c_medium", 96)):  # file order is not size order
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    options = RunOptions(
        out=str(tmp_path / "out"), flush_seconds=0, cpus_per_image=2
    )  # one image at a time on this 2-CPU Ray
    table = run_dataset(open_dataset(f"folder:{folder}"), Method(config=FAST), options).table
    assert table.sort_by("finished_at").column("image_id").to_pylist() == ["b_large", "c_medium", "a_small"]


def test_progress_counts_failed_rows_as_done_but_not_into_the_rate_and_weighs_the_eta_by_pixels(capsys):
    earlier = read_results(OutputStore(tempfile.mkdtemp()), "demo", "none")  # an empty table of the run's schema
    progress = Progress(total=3, earlier=earlier, pixels_left=1000 + 10 + 10)
    progress.update({"image_id": "big", "status": "ok", "psnr": 30.0, "ssim": 0.9}, pixels=1000)
    progress.update({"image_id": "bad", "status": "failed", "psnr": None, "ssim": None}, pixels=10)
    assert (progress.done, progress.failed, progress.computed, progress.pixels_left) == (2, 1, 1, 10)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("[2/3] bad: failed | failed 1 | mean PSNR 30.00")
    eta = lines[-1].rsplit("ETA ", 1)[1]
    assert eta == "00:00:00"  # 10 pixels left at the rate of 1,000 pixels done: well under a second


def test_the_png_and_the_metrics_share_one_8_bit_image_rounded_or_floored_as_the_authors_save(astronaut_pair):
    noisy, clean = astronaut_pair
    config = S2SConfig(steps=2, passes=2, lambda_iqa=0.0)
    rounded = denoise_image("x", noisy, clean, Method("s2s+", config), sigma=None, cpus=1)
    floored = denoise_image(
        "x", noisy, clean, Method("s2s+", config, RunSettings(quantize="floor")), sigma=None, cpus=1
    )
    difference = rounded["denoised"].astype(int) - floored["denoised"].astype(int)
    assert set(np.unique(difference)) == {0, 1}  # the same float output, truncated instead of rounded
    for result in (rounded, floored):
        assert result["psnr"] == calculate_psnr(result["denoised"], clean)
    assert floored["psnr"] != rounded["psnr"]


def test_contact_sheet_tiles_enlarge_small_images_by_whole_factors_and_crop_large_ones():
    from s2s_sweep.tracking import sheet_crop

    small = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    tile = sheet_crop(small)
    assert tile.shape == (128, 128, 3)
    assert np.array_equal(tile[:128, :96], small.repeat(2, 0).repeat(2, 1)) and not tile[:, 96:].any()
    large = np.random.default_rng(1).integers(0, 256, (300, 200, 1), dtype=np.uint8)
    assert np.array_equal(sheet_crop(large), np.repeat(large[86:214, 36:164], 3, axis=2))
