"""Outputs on object storage, end to end: a real S3-compatible server (moto's standalone server)
on 127.0.0.1, the CLI on a real `ray start` head, a real `mlflow server`. Run, sweep, resume
and the table read back with pandas, all on s3:// outputs; secrets given in URIs recorded
nowhere; a store that goes down for seconds, then for longer than the patience (exit 4, the
fallback), then a resume that uploads the fallback and completes the run."""

import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.fs as pafs
import pytest
from conftest import BIN, FLOW_PRECISION, REPO, TcpProxy, free_port, start_mlflow_server, stop_server, wait_until
from test_faults import noise_folder
from test_sweep import SPACE

from s2s_sweep.datasets import open_dataset
from s2s_sweep.errors import EXIT_OK, EXIT_STORE_LOST

pytest.importorskip("moto", reason="moto[server] (a dev dependency) provides the S3-compatible test server")

FAST = ["--set", "steps=10", "passes=2", "lambda_iqa=0", f"precision={FLOW_PRECISION}"]
BUCKET = "bkt"


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1 with one bucket; yields its port."""
    port = free_port()
    server = subprocess.Popen(
        [BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    admin = pafs.S3FileSystem(
        access_key="admin",
        secret_key="admin",
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )

    def bucket_created() -> bool:
        try:
            admin.create_dir(BUCKET)
            return True
        except OSError:
            return False

    try:
        wait_until(bucket_created, 60, "the S3 server")
        yield port
    finally:
        stop_server(server)


def s3_files(port: int, prefix: str) -> dict[str, bytes]:
    """Every object under s3://bkt/prefix, read straight from the server."""
    fs = pafs.S3FileSystem(
        access_key="reader",
        secret_key="reader",
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
    )
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return {info.path: fs.open_input_stream(info.path).readall() for info in infos if info.type == pafs.FileType.File}


def cli(*args: str, env: dict, timeout: float = 600, module: str = "s2s_sweep.run") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout
    )


def run_id_of(done: subprocess.CompletedProcess) -> str:
    return next(line for line in done.stdout.splitlines() if line.startswith("run ")).split()[1].rstrip(":")


@pytest.mark.slow
def test_a_run_and_a_sweep_on_s3_record_no_secret_anywhere(ray_head, s3_server, tmp_path):
    out_secret, mlflow_secret = f"outSecret{secrets.token_hex(8)}", f"mlflowSecret{secrets.token_hex(8)}"
    mlflow_port = free_port()
    mlflow_server = start_mlflow_server(tmp_path / "mlflow", mlflow_port)
    out = (
        f"s3://AKIDTEST:{out_secret}@{BUCKET}/runs?endpoint_override=127.0.0.1:{s3_server}&scheme=http&region=us-east-1"
    )
    where = [
        "--out",
        out,
        "--mlflow-uri",
        f"http://alice:{mlflow_secret}@127.0.0.1:{mlflow_port}",
        "--address",
        ray_head["gcs"],
    ]
    env = {key: value for key, value in ray_head["env"].items() if not key.startswith(("AWS_", "MLFLOW_"))}
    try:
        first = cli("demo", "--limit", "2", *FAST, "init=warm", *where, env=env)  # its seed.pt goes to the bucket
        assert first.returncode == EXIT_OK, first.stderr[-3000:]
        assert "carries credentials" in first.stderr and "process list" in first.stderr
        run_id = run_id_of(first)
        seed_uri = out.replace("/runs?", f"/runs/demo/{run_id}/seed.pt?")  # the keys in the URI, as --out has them
        from_seed = cli("demo", "--limit", "1", *FAST, f"init={seed_uri}", *where, env=env)
        assert from_seed.returncode == EXIT_OK, from_seed.stderr[-3000:]
        space = tmp_path / "space.yaml"
        space.write_text(SPACE)
        sweep = cli("demo", "--sweep-only", "--space", str(space), "--trials", "2", *where, env=env)
        assert sweep.returncode == EXIT_OK, sweep.stderr[-3000:]
        report = cli(out, *where[2:4], env=env, module="s2s_sweep.report")
        assert report.returncode == EXIT_OK, report.stderr[-3000:]
    finally:
        stop_server(mlflow_server)

    reader = pafs.S3FileSystem(
        access_key="reader",
        secret_key="reader",
        endpoint_override=f"127.0.0.1:{s3_server}",
        scheme="http",
        region="us-east-1",
    )
    table = pd.read_parquet(f"{BUCKET}/runs/demo/{run_id}/results", filesystem=reader)
    assert len(table) == 2 and set(table["status"]) == {"ok"} and table["image_id"].is_unique
    seeded = pd.read_parquet(f"{BUCKET}/runs/demo/{run_id_of(from_seed)}/results", filesystem=reader)
    assert seeded["init"].tolist() == ["file"] and seeded["init_source"][0].startswith(
        f"s3://{BUCKET}/runs/demo/{run_id}/seed.pt"
    )  # no keys in it
    objects = s3_files(s3_server, "runs")
    assert any("/sweeps/" in path and path.endswith("best_config.yaml") for path in objects)
    (page,) = [data.decode() for path, data in objects.items() if path.endswith("report.html")]
    assert run_id in page and "Sweeps" in page  # the report read the run and the sweep back from the bucket

    written = {f"s3://{path}": data for path, data in objects.items()}
    written |= {str(path): path.read_bytes() for path in (tmp_path / "mlflow").rglob("*") if path.is_file()}
    written |= {
        f"{done.args[3:5]} {name}": text.encode()
        for done in (first, from_seed, sweep, report)
        for name, text in (("stdout", done.stdout), ("stderr", done.stderr))
    }
    ray_session = Path(ray_head["temp_dir"]) / "session_latest"  # what the head, its workers and Tune logged
    written |= {
        str(path): path.read_bytes()
        for path in ray_session.rglob("*")
        if path.is_file() and not path.is_socket() and path.stat().st_size < 50 * 2**20
    }
    for secret in (out_secret, mlflow_secret):
        assert not [where for where, data in written.items() if secret.encode() in data]
    assert len(written) > 20  # the search covered the bucket, the MLflow store and the logs
    assert sum(where.startswith(str(ray_session)) for where in written) > 5  # the head's own logs among them


@pytest.mark.slow
def test_a_store_down_for_seconds_loses_nothing_and_one_down_past_the_patience_resumes_from_the_fallback(
    ray_head, s3_server, tmp_path
):
    proxy = TcpProxy(s3_server)
    env = {**ray_head["env"], "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "from-the-environment"}
    out = f"s3://{BUCKET}/outage?endpoint_override=127.0.0.1:{proxy.port}&scheme=http&region=us-east-1"
    folder = noise_folder(tmp_path / "images", 10)
    key, fallback = open_dataset(f"folder:{folder}").key, tmp_path / "fallback"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        f"folder:{folder}",
        *FAST,
        "--out",
        out,
        "--fallback",
        str(fallback),
        "--store-patience",
        "12",
        "--flush-seconds",
        "0",
        "--address",
        ray_head["gcs"],
        "--mlflow-uri",
        tracking,
    ]
    with open(tmp_path / "stdout.txt", "w") as stdout:
        driver = subprocess.Popen(
            [sys.executable, "-m", "s2s_sweep.run", *args],
            cwd=REPO,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(iter(driver.stderr.readline, "")), daemon=True).start()

    def said(text: str) -> bool:
        return any(text in line for line in stderr)

    wait_until(lambda: (tmp_path / "stdout.txt").read_text().startswith("run "), 120, "the run's first line")
    run_id = (tmp_path / "stdout.txt").read_text().split()[1].rstrip(":")
    wait_until(lambda: len(s3_files(s3_server, f"outage/{key}/{run_id}/images")) >= 1, 300, "the first PNG")
    proxy.down()  # until a finished image is held (the S3 client's own retries take about 6 s first), then back
    wait_until(lambda: said("held in memory"), 300, "a write held while the store is down")
    proxy.up()
    wait_until(lambda: said("output store back after"), 120, "the held files written")
    proxy.down()  # now past the patience: the run stops, what is held goes to the fallback
    driver.wait(timeout=600)
    assert driver.returncode == EXIT_STORE_LOST, "".join(stderr)[-3000:]
    assert f"--resume {run_id} uploads them" in stderr[-1] and not said("Traceback")
    held = [path for path in (fallback / key / run_id).rglob("*") if path.is_file()]
    assert held  # at least the rows of the images the store did not take
    client = mlflow.MlflowClient(tracking)
    experiment = client.get_experiment_by_name(f"s2s-sweep/{key}")
    assert experiment.artifact_location == str(
        tmp_path / "mlartifacts"
    )  # beside the database, not ./mlruns where the job started
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"

    proxy.up()
    resumed = cli(*args, "--resume", run_id, env=env)
    assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]
    assert f"uploaded {len(held)} files" in resumed.stdout and not (fallback / key / run_id).exists()
    objects = s3_files(s3_server, f"outage/{key}/{run_id}")
    table = pd.read_parquet(
        f"{BUCKET}/outage/{key}/{run_id}/results",
        filesystem=pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{s3_server}",
            scheme="http",
            region="us-east-1",
            access_key="a",
            secret_key="b",
        ),
    )
    assert (
        len(table) == 10 and table["image_id"].is_unique and set(table["status"]) == {"ok"}
    )  # every image exactly once
    assert all(any(path.endswith(f"/{output}") for path in objects) for output in table["output"])
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != "from-the-environment"  # the test's own process untouched
