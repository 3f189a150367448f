"""End to end on real clusters: `ray start --head` on loopback + `ray job submit`, a real
`mlflow server`, a driver killed with SIGKILL and resumed, and a multi-node cluster that
loses a node mid-run."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import ray
from conftest import REPO

from model.config import S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.runner import RunOptions, run_dataset

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real single-node Ray cluster started with `ray start --head` on loopback."""
    port, dashboard = free_port(), free_port()
    # Ray >= 2.59 enables token authentication on local clusters: every client needs the token
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # job entrypoints run `python` from this venv
    subprocess.run(
        [BIN / "ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}", "--num-cpus=2", "--disable-usage-stats"],
        check=True, capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    try:
        yield {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard}", "env": env}
    finally:
        subprocess.run([BIN / "ray", "stop", "--force"], capture_output=True, env=env, timeout=120)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a SQLite store and served artifacts."""
    port = free_port()
    server = subprocess.Popen(
        [BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 120, "the MLflow server")
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_ray_job_submit_runs_the_demo_with_the_iqa_loss_into_a_real_mlflow_server(ray_head, mlflow_server, tmp_path, iqa_weights_dir):
    out = tmp_path / "out"
    runtime_env = {"excludes": [".git", ".venv", "outputs", "benchmarks/results"], "env_vars": {"TORCH_HOME": iqa_weights_dir}}
    done = subprocess.run(
        [BIN / "ray", "job", "submit", "--address", ray_head["dashboard"], "--working-dir", str(REPO),
         "--runtime-env-json", json.dumps(runtime_env), "--",
         "python", "-m", "s2s_sweep.run", "demo", "--limit", "2", "--set", "steps=20", "passes=4", "lambda_iqa=2e-8",
         "--out", str(out), "--mlflow-uri", mlflow_server],
        capture_output=True, text=True, timeout=600, env=ray_head["env"],
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and "[2/2]" in done.stdout and "ETA" in done.stdout

    frame = pd.read_parquet(next(out.glob("demo/*/results")))
    assert len(frame) == 2 and set(frame["status"]) == {"ok"} and (frame["lambda_iqa"] == 2e-8).all()
    client = mlflow.MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("s2s-sweep/demo").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["lambda_iqa"] == "2e-08"
    assert run.data.metrics["final_mean_psnr"] == pytest.approx(frame["psnr"].mean())
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"results.parquet", "config.yaml", "contact_sheet.png"}


def test_driver_killed_with_sigkill_then_resumed_records_every_image_exactly_once(ray_head, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "s2s_sweep.run", "demo", "--limit", "4", "--set", "steps=30", "passes=2", "lambda_iqa=0",
               "--out", str(out), "--address", ray_head["gcs"], "--flush-seconds", "0"]  # fmt: skip
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=ray_head["env"])
    run_id = driver.stdout.readline().split()[1].rstrip(":")  # "run <id>: demo, ..."
    wait_until(lambda: any(out.glob("demo/*/results/**/*.parquet")), 300, "the first recorded image")
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    recorded = len(pd.read_parquet(out / "demo" / run_id / "results"))
    assert 1 <= recorded < 4

    resumed = subprocess.run([*command, "--resume", run_id], cwd=REPO, capture_output=True, text=True, timeout=600, env=ray_head["env"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{4 - recorded} of 4 images to do" in resumed.stdout
    frame = pd.read_parquet(out / "demo" / run_id / "results")
    assert sorted(frame["image_id"]) == sorted(open_dataset("demo").ids[:4])  # each exactly once
    assert set(frame["status"]) == {"ok"} and len({*frame["config_hash"]}) == 1
    for output in frame["output"]:
        assert (out / "demo" / run_id / output).stat().st_size > 0


def test_multi_node_cluster_spreads_tasks_and_survives_losing_a_node(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        dataset = open_dataset("demo")
        options = RunOptions(out=str(tmp_path), run_id="multi", flush_seconds=0)
        result = {}
        thread = threading.Thread(target=lambda: result.update(table=run_dataset(dataset, S2SConfig(steps=25, passes=2, lambda_iqa=0.0), options).table))
        thread.start()
        results = tmp_path / "demo" / "multi" / "results"
        wait_until(lambda: results.exists() and pd.read_parquet(results)["node_id"].nunique() == 2, 300, "a result from each worker")
        cluster.remove_node(workers[1])  # its running task dies with it and is retried elsewhere
        thread.join(timeout=600)
        frame = result["table"].to_pandas()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert sorted(frame["image_id"]) == sorted(dataset.ids)  # every image exactly once
    assert set(frame["status"]) == {"ok"}
    assert frame["node_id"].nunique() == 2  # both workers ran tasks before one was removed
