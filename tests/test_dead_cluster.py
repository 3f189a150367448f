"""A Ray cluster killed while up leaves its address on the machine (Ray's temp folder,
`ray_current_cluster`); a run without an address must say so in one line and exit 2, not retry
that dead address forever."""

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO, free_port, ray_processes, start_ray_head, stop_ray_processes

pytestmark = pytest.mark.slow


def test_a_run_that_finds_a_dead_local_cluster_exits_2_in_seconds_with_one_line(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="s2s-ray-", dir="/tmp")  # Ray's default temp folder for these processes only
    env = {
        **os.environ,
        "RAY_TMPDIR": temp_dir,
        "RAY_ADDRESS": "",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    port = free_port()
    start_ray_head(port, env, "--include-dashboard=false", "--num-cpus=1")
    try:
        recorded = list(Path(temp_dir).rglob("ray_current_cluster"))
        assert recorded and str(port) in recorded[0].read_text(), "the head recorded no address where the run will look"
        # a crash: every process of the cluster killed, its address file left behind
        for process in ray_processes(temp_dir):
            process.kill()
        time.sleep(1)
        for address in ([], ["--address", "auto"]):
            started = time.monotonic()
            command = ["s2s_sweep.run", "demo", "--limit", "1", "--set", "steps=2", "passes=1", "--out", str(tmp_path)]
            run = subprocess.run(
                [sys.executable, "-m", *command, *address],
                cwd=REPO,
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            seconds = time.monotonic() - started
            assert run.returncode == 2, run.stderr[-2000:]
            errors = [
                line for line in run.stderr.splitlines() if line.startswith("error:")
            ]  # MLflow may log INFO lines too
            assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
            assert f":{port} " in errors[0] and "ray stop" in errors[0] and "--address local" in errors[0], errors[0]
            assert seconds < 30, f"took {seconds:.0f} s"  # imports included; the probe itself gives up after 3 s
    finally:
        stop_ray_processes(temp_dir)
