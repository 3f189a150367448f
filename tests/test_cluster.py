"""End to end on real clusters: `ray start --head` on loopback + `ray job submit`, a real
`mlflow server`, a driver killed with SIGKILL and resumed, and a multi-node cluster that
loses a node mid-run."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import ray
from conftest import BIN, FLOW_PRECISION, REPO, wait_until
from PIL import Image

from model.config import S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.methods import Method
from s2s_sweep.runner import RunOptions, run_dataset

pytestmark = pytest.mark.slow  # every test here starts a cluster or submits a job


def test_ray_job_submit_runs_the_demo_with_the_iqa_loss_into_a_real_mlflow_server(
    ray_head, mlflow_server, tmp_path, iqa_weights_dir
):
    out = tmp_path / "out"
    runtime_env = {
        "excludes": [".git", ".venv", "outputs", "benchmarks/results"],
        "env_vars": {"TORCH_HOME": iqa_weights_dir},
    }
    done = subprocess.run(
        [
            BIN / "ray",
            "job",
            "submit",
            "--address",
            ray_head["dashboard"],
            "--working-dir",
            str(REPO),
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            "python",
            "-m",
            "s2s_sweep.run",
            "demo",
            "--limit",
            "2",
            "--set",
            "steps=10",
            "passes=4",
            "lambda_iqa=2e-8",
            "--out",
            str(out),
            "--mlflow-uri",
            mlflow_server,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ray_head["env"],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and "[2/2]" in done.stdout and "ETA" in done.stdout

    frame = pd.read_parquet(next(out.glob("demo/*/results")))
    assert len(frame) == 2 and set(frame["status"]) == {"ok"} and (frame["lambda_iqa"] == 2e-8).all()
    client = mlflow.MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("s2s-sweep/demo").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["lambda_iqa"] == "2e-08"
    assert run.data.metrics["final_mean_psnr"] == pytest.approx(frame["psnr"].mean())
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "results.parquet",
        "config.yaml",
        "contact_sheet.png",
    }


def test_driver_killed_with_sigkill_then_resumed_records_every_image_exactly_once(ray_head, tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "s2s_sweep.run",
        "demo",
        "--limit",
        "4",
        "--set",
        "steps=10",
        "passes=2",
        "lambda_iqa=0",
        f"precision={FLOW_PRECISION}",
        "--out",
        str(out),
        "--address",
        ray_head["gcs"],
        "--flush-seconds",
        "0",
    ]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=ray_head["env"])
    run_id = driver.stdout.readline().split()[1].rstrip(":")  # "run <id>: demo, ..."
    wait_until(lambda: any(out.glob("demo/*/results/**/*.parquet")), 300, "the first recorded image")
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    recorded = len(pd.read_parquet(out / "demo" / run_id / "results"))
    assert 1 <= recorded < 4

    resumed = subprocess.run(
        [*command, "--resume", run_id], cwd=REPO, capture_output=True, text=True, timeout=600, env=ray_head["env"]
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{4 - recorded} of 4 images to do" in resumed.stdout
    frame = pd.read_parquet(out / "demo" / run_id / "results")
    assert sorted(frame["image_id"]) == sorted(open_dataset("demo").ids[:4])  # each exactly once
    assert set(frame["status"]) == {"ok"} and len({*frame["config_hash"]}) == 1
    for output in frame["output"]:
        assert (out / "demo" / run_id / output).stat().st_size > 0


def noise_folder(folder: Path, count: int, side: int) -> Path:
    """`count` random side x side RGB PNGs (no references)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"img{index:02d}.png")
    return folder


def peak_concurrency(frame: pd.DataFrame) -> int:
    """Most images computing at once, from each row's compute interval [finished - compute, finished]."""
    finished = frame["finished_at"].astype("int64") / 1e6
    started = finished - frame["train_seconds"] - frame["inference_seconds"]
    events = sorted([(t, 1) for t in started] + [(t, -1) for t in finished])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_a_node_joins_mid_run_gets_work_within_seconds_and_losing_it_loses_no_image(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        dataset = open_dataset(f"folder:{noise_folder(tmp_path / 'images', 12, 64)}")
        options = RunOptions(out=str(tmp_path / "out"), run_id="elastic", flush_seconds=0)
        result = {}
        thread = threading.Thread(
            target=lambda: result.update(
                table=run_dataset(
                    dataset,
                    Method(config=S2SConfig(steps=20, passes=2, lambda_iqa=0.0, precision=FLOW_PRECISION)),
                    options,
                ).table
            )
        )
        thread.start()
        results = tmp_path / "out" / dataset.key / "elastic" / "results"
        wait_until(lambda: results.exists() and len(pd.read_parquet(results)) >= 1, 300, "the first image")
        first_node = pd.read_parquet(results)["node_id"].iloc[0]
        joined = time.time()
        new_node = cluster.add_node(num_cpus=2)  # from the main thread, as Ray requires
        wait_until(
            lambda: (pd.read_parquet(results)["node_id"] != first_node).sum() >= 2, 300, "two images from the new node"
        )
        cluster.remove_node(new_node)  # its running tasks die with it and are retried on the first node
        thread.join(timeout=600)
        frame = result["table"].to_pandas()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert sorted(frame["image_id"]) == sorted(dataset.ids) and set(frame["status"]) == {
        "ok"
    }  # every image exactly once
    finished = frame["finished_at"].astype("int64") / 1e6
    new = frame[frame["node_id"] != first_node]
    new_started = finished[new.index] - new["train_seconds"] - new["inference_seconds"]
    # within seconds: the raylet's start, a worker process with torch imported, then its first image
    assert new_started.min() - joined < 30, "the new node got no work within seconds"
    assert peak_concurrency(frame) >= 3  # first node 1 + new node 2
    assert (frame["node_id"] == first_node).sum() > 1  # the first node finished the rest after the loss


def test_ray_job_stop_flushes_the_rows_and_ends_the_mlflow_run_as_killed(ray_head, tmp_path):
    out = tmp_path / "out"
    runtime_env = {"excludes": [".git", ".venv", "outputs", "benchmarks/results"]}
    submitted = subprocess.run(
        [
            BIN / "ray",
            "job",
            "submit",
            "--no-wait",
            "--address",
            ray_head["dashboard"],
            "--working-dir",
            str(REPO),
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            "python",
            "-m",
            "s2s_sweep.run",
            "demo",
            "--set",
            "steps=30",
            "passes=2",
            "lambda_iqa=0",
            f"precision={FLOW_PRECISION}",
            "--out",
            str(out),
            "--flush-seconds",
            "3600",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=ray_head["env"],
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr).group()

    def logs() -> str:
        return subprocess.run(
            [BIN / "ray", "job", "logs", "--address", ray_head["dashboard"], job_id],
            capture_output=True,
            text=True,
            timeout=60,
            env=ray_head["env"],
        ).stdout

    wait_until(lambda: "[1/4]" in logs(), 300, "the job's first image")  # recorded, but not flushed (flush every hour)
    stopped = subprocess.run(
        [BIN / "ray", "job", "stop", "--address", ray_head["dashboard"], job_id],
        capture_output=True,
        text=True,
        timeout=120,
        env=ray_head["env"],
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "terminated: finished work is recorded" in logs()
    frame = pd.read_parquet(next(out.glob("demo/*/results")))
    assert len(frame) >= 1 and set(frame["status"]) == {"ok"}
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("s2s-sweep/demo").experiment_id])
    assert run.info.status == "KILLED"
