"""Faults of a running job, end to end through `python -m s2s_sweep.run` on a real `ray start` head:
a tracking server that dies, SIGTERM / Ctrl-C, failed images rerun, and the exit status of
each (an output store lost mid-run: test_object_store.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import FLOW_PRECISION, REPO, free_port, run_in_process, start_mlflow_server, stop_server, wait_until
from PIL import Image

from s2s_sweep.errors import (
    EXIT_BUG,
    EXIT_IMAGES_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_TRACKING_BEHIND,
)

FAST = ["--set", "steps=10", "passes=2", "lambda_iqa=0", f"precision={FLOW_PRECISION}"]


def noise_folder(folder: Path, count: int, side: int = 64) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"img{index:02d}.png")
    return folder


def interruptible() -> None:
    """In the child: Ctrl-C as in a terminal. A suite started in the background (`cmd &`, nohup)
    passes SIGINT on ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(*args: str, env: dict) -> tuple[subprocess.Popen, str]:
    """Start `python -m s2s_sweep.run ARGS` and return it with its run id (its first line)."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "s2s_sweep.run", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=interruptible,
    )
    first = driver.stdout.readline()
    assert first.startswith("run "), first + driver.stderr.read()[-3000:]
    return driver, first.split()[1].rstrip(":")


def recorded(results: Path) -> int:
    return len(pd.read_parquet(results)) if results.exists() and any(results.rglob("*.parquet")) else 0


def mlflow_run(uri: str, experiment: str):
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


@pytest.mark.slow
def test_a_tracking_outage_never_stops_the_images_and_a_resume_catches_mlflow_up(ray_head, tmp_path):
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    folder = noise_folder(tmp_path / "images", 8)
    args = [
        f"folder:{folder}",
        *FAST,
        "--out",
        str(tmp_path / "out"),
        "--address",
        ray_head["gcs"],
        "--mlflow-uri",
        uri,
        "--flush-seconds",
        "0",
    ]
    driver, run_id = start_run(*args, env=ray_head["env"])
    (results,) = [p / "results" for p in (tmp_path / "out").glob(f"*/{run_id}")]
    wait_until(lambda: recorded(results) >= 3, 300, "three recorded images")
    stop_server(server, signal.SIGKILL)  # the whole process group: workers too
    stdout, stderr = driver.communicate(timeout=600)
    ended = time.time()

    assert driver.returncode == EXIT_TRACKING_BEHIND, stderr[-3000:]
    frame = pd.read_parquet(results)
    assert sorted(frame["image_id"]) == [f"img{i:02d}" for i in range(8)] and set(frame["status"]) == {"ok"}
    assert ended - frame["finished_at"].max().timestamp() < 120  # ends within 2 minutes of its last image
    assert stderr.count("warning: MLflow at") == 1 and "tracking behind" in stderr and f"--resume {run_id}" in stderr

    server = start_mlflow_server(tmp_path, port)  # back, same store
    try:
        resumed = subprocess.run(
            [sys.executable, "-m", "s2s_sweep.run", *args, "--resume", run_id],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env=ray_head["env"],
        )
        assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]
        assert "0 of 8 images to do" in resumed.stdout
        client, run = mlflow_run(uri, f"s2s-sweep/{results.parent.parent.name}")
        assert run.info.status == "FINISHED" and run.data.metrics["images_ok"] == 8
        assert [m.step for m in client.get_metric_history(run.info.run_id, "images_done")] == list(range(1, 9))
        assert "results.parquet" in {a.path for a in client.list_artifacts(run.info.run_id)}
    finally:
        stop_server(server)


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, EXIT_TERMINATED), (signal.SIGINT, EXIT_INTERRUPTED)])
def test_a_stopped_run_flushes_its_rows_and_ends_its_mlflow_run_as_killed(ray_head, tmp_path, signum, status):
    out = tmp_path / "out"
    driver, run_id = start_run(
        "demo",
        "--limit",
        "4",
        *FAST,
        "--out",
        str(out),
        "--address",
        ray_head["gcs"],
        "--flush-seconds",
        "3600",
        env=ray_head["env"],
    )
    line = driver.stdout.readline()  # the first finished image; its row is not flushed yet
    assert line.startswith("[1/4]"), line
    sent = time.monotonic()
    driver.send_signal(signum)
    driver.wait(timeout=60)
    stopped_in, stderr = time.monotonic() - sent, driver.stderr.read()
    assert stopped_in < 3, stderr[-3000:]  # inside Ray's default RAY_JOB_STOP_WAIT_TIME_S
    assert driver.returncode == status, stderr[-3000:]
    assert "Traceback" not in stderr
    assert recorded(out / "demo" / run_id / "results") >= 1
    _, run = mlflow_run(f"sqlite:///{out / 'mlflow.db'}", "s2s-sweep/demo")
    assert run.info.status == "KILLED"


@pytest.mark.slow
def test_failed_images_exit_1_and_rerun_with_retry_failed_replacing_their_rows(ray_head, tmp_path):
    folder = noise_folder(tmp_path / "images", 2)
    (folder / "img01.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = [f"folder:{folder}", *FAST, "--out", str(tmp_path / "out"), "--flush-seconds", "0"]
    env = {**ray_head["env"], "RAY_ADDRESS": ""}  # set but empty, as CI leaves it: a local Ray starts
    done = subprocess.run(
        [sys.executable, "-m", "s2s_sweep.run", *args], cwd=REPO, capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == EXIT_IMAGES_FAILED, done.stderr[-3000:]
    assert "[ERROR" not in done.stderr  # OpenCV's own log lines stay quiet; the row names the file
    run_id = done.stdout.split()[1].rstrip(":")
    (results,) = (tmp_path / "out").glob(f"*/{run_id}/results")
    rows = pd.read_parquet(results).set_index("image_id")
    assert rows.loc["img01", "status"] == "failed" and "img01.png: cannot decode" in rows.loc["img01", "error"]

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(folder / "img01.png")  # repaired
    again = subprocess.run(  # on this module's cluster: a second local Ray's start-up would add nothing
        [sys.executable, "-m", "s2s_sweep.run", *args, "--resume", run_id, "--retry-failed"]
        + ["--address", ray_head["gcs"]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=ray_head["env"],
    )
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    assert "1 of 2 images to do" in again.stdout
    frame = pd.read_parquet(results)
    assert sorted(frame["image_id"]) == ["img00", "img01"] and set(frame["status"]) == {"ok"}  # one row per image
    assert len(list(results.rglob("*.parquet"))) == 1  # compacted


def test_an_internal_error_keeps_its_traceback_and_exits_70(monkeypatch):
    import s2s_sweep.run as cli

    monkeypatch.setattr(cli, "run", lambda args: {}["bug"])
    done = run_in_process("s2s_sweep.run", "demo")
    assert done.returncode == EXIT_BUG
    assert "Traceback" in done.stderr and "KeyError: 'bug'" in done.stderr and "internal error" in done.stderr


def test_a_stop_during_a_write_to_a_local_tracking_store_waits_for_it_then_ends_the_run_killed(tmp_path):
    """SIGTERM landing inside an MLflow write to SQLite: the write completes, then Terminated is
    raised, and the run's KILLED status can still be written (a write cut mid-transaction left the
    database locked, and the stop waited out SQLite's timeout)."""
    from s2s_sweep.errors import Terminated, raise_on_sigterm
    from s2s_sweep.store import OutputStore
    from s2s_sweep.tracking import RunTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunTracker(uri, "s2s-sweep/stop", OutputStore(str(tmp_path)))
    run_id = tracker.start("stopped", {"p": 0.4})
    log_batch = tracker.client.log_batch

    def stopped_mid_write(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the write is under way
        time.sleep(0.2)
        return log_batch(*args, **kwargs)

    tracker.client.log_batch = stopped_mid_write
    handler = signal.getsignal(signal.SIGTERM)
    raise_on_sigterm()
    try:
        with pytest.raises(Terminated):
            tracker.log_metrics({"images_done": 1.0}, step=1)
    finally:
        signal.signal(signal.SIGTERM, handler)
    tracker.finish("KILLED")
    client = mlflow.MlflowClient(uri)
    assert tracker.behind is None and client.get_run(run_id).info.status == "KILLED"
    assert [m.value for m in client.get_metric_history(run_id, "images_done")] == [1.0]  # the write completed
