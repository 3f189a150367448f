"""The tracker against a real `mlflow server`: what a run, a sweep and the report print for MLflow
opens the experiment's runs table, not MLflow 3's GenAI overview (checked in a real headless
Chromium); opening a run waits for a server slow to answer, and later calls do not."""

import shutil
import subprocess
import time

import pytest
from conftest import TcpProxy, free_port, start_mlflow_server, stop_server

from s2s_sweep.store import OutputStore
from s2s_sweep.tracking import HTTP_TIMEOUT_SECONDS, RunTracker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rendered(url: str, profile) -> str:
    """The page's DOM after its scripts ran, in a fresh headless Chromium (a new profile)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync"]
    flags += ["--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}"]
    command = [CHROMIUM, *flags, "--virtual-time-budget=15000", "--dump-dom", url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout


def test_the_printed_link_names_the_runs_table_of_the_machine_learning_workflow(tmp_path):
    tracker = RunTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s2s-sweep/demo", OutputStore(str(tmp_path / "out")))
    tracker.start("demo run", {"p": 0.4})
    local = tracker.ui_command()
    assert local.startswith("mlflow ui --backend-store-uri sqlite:///")
    assert local.endswith(
        f"then open http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning"
    )


@pytest.fixture(scope="module")
def server_port(tmp_path_factory):
    port = free_port()
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"), port)
    try:
        yield port
    finally:
        stop_server(server)


@pytest.mark.slow
def test_opening_a_run_waits_for_a_server_slow_to_answer_and_later_calls_give_up_in_seconds(server_port, tmp_path):
    proxy = TcpProxy(server_port)
    proxy.hold_next_request(HTTP_TIMEOUT_SECONDS + 3)  # as a fresh server's first request, which creates its database
    tracker = RunTracker(f"http://127.0.0.1:{proxy.port}", "s2s-sweep/slow", OutputStore(str(tmp_path / "out")))
    tracker.start("slow server", {"p": 0.4})  # no TrackingError: the opening waited
    proxy.hold_next_request(HTTP_TIMEOUT_SECONDS + 3)
    started = time.monotonic()
    tracker.call("log_metric", tracker.run_id, "psnr", 30.0)
    assert tracker.behind and "log_metric" in tracker.behind  # once open, a slow answer is a failure, warned once
    assert time.monotonic() - started < HTTP_TIMEOUT_SECONDS + 2


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_the_printed_link_opens_the_runs_table_in_a_fresh_browser(server_port, tmp_path):
    uri = f"http://127.0.0.1:{server_port}"
    tracker = RunTracker(uri, "s2s-sweep/demo", OutputStore(str(tmp_path / "out")))
    tracker.start("demo S2S+ p=0.4 RUNMARKER", {"p": 0.4})
    tracker.finish("FINISHED")
    printed = tracker.ui_command()  # "open URL (run ID)"
    link = printed.split()[1]
    assert link == f"{uri}/#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning"
    assert "RUNMARKER" in rendered(link, tmp_path / "profile1")  # the runs table lists the run
    # the bare experiment address, what was printed before, opens MLflow 3's overview instead
    assert "RUNMARKER" not in rendered(f"{uri}/#/experiments/{tracker.experiment_id}", tmp_path / "profile2")
