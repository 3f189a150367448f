import contextlib
import importlib
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from model.config import native_bf16
from model.iqa_weights import write_random_iqa_weights
from s2s_sweep.datasets import add_gaussian_noise

REPO = Path(__file__).resolve().parents[1]
# End-to-end tests of the flow (faults, clusters, storage) train in the fastest arithmetic this CPU has natively.
FLOW_PRECISION = "bf16" if native_bf16("cpu") else "fp32"
# Every download goes through a proxy that refuses connections, so a verdict never depends on the network.
NO_DOWNLOADS = {name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")} | {
    "no_proxy": "",
    "NO_PROXY": "",
}


@pytest.fixture(autouse=True)
def torch_threads():
    """Each test starts with this process's own torch thread count: a task function called in a
    test sets it to its task's CPUs (`denoise_image(..., cpus=1)`), and every later test in the
    process would otherwise train on one thread."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def iqa_weights_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("torch_home")
    write_random_iqa_weights(root)
    return str(root)


@pytest.fixture(scope="session")
def astronaut_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real photograph (scikit-image's astronaut, 96x96 crop of the face) with σ = 25 noise."""
    from skimage import data

    clean = data.astronaut()[30:126, 180:276].astype(np.float32) / 255.0
    return add_gaussian_noise(clean, 25.0, seed=1), clean


def write_sidd_mat(
    folder: Path, noisy_key="ValidationNoisyBlocksSrgb", gt_key="ValidationGtBlocksSrgb", shape=(2, 3, 64, 64, 3)
) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 blocks (images, blocks, H, W, 3) saved as SIDD's official .mat files are laid out."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, shape, dtype=np.uint8)
    clean = rng.integers(0, 256, shape, dtype=np.uint8)
    scipy.io.savemat(folder / f"{noisy_key}.mat", {noisy_key: noisy})
    if gt_key:
        scipy.io.savemat(folder / f"{gt_key}.mat", {gt_key: clean})
    return noisy, clean


def run_module(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m ...` from the repository root and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_in_process(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` as a call of its main() in this process, as run_module returns it:
    the exit status and what it printed, without a second interpreter's start-up (seconds each).
    For a CLI that starts no Ray (the denoise, export and report CLIs), input refused before it
    would, or a run or sweep on the `local_ray` this process already has."""
    main = importlib.import_module(module).main
    handler = signal.getsignal(signal.SIGTERM)  # main() may turn SIGTERM into an exception: give it back after
    environment = dict(os.environ)  # and what it exported (Tune's MLflow callback sets MLFLOW_TRACKING_URI)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(list(args))
    finally:
        signal.signal(signal.SIGTERM, handler)
        os.environ.clear()
        os.environ.update(environment)
    return subprocess.CompletedProcess([module, *args], status, stdout.getvalue(), stderr.getvalue())


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


def ray_processes(temp_dir: str) -> list:
    """The processes of the Ray cluster whose temp folder is `temp_dir`: those naming it (gcs_server,
    raylet, …) and their descendants (agents and workers rename themselves, `ray::DashboardAgent`,
    and name it no more)."""
    import psutil

    found = {}
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in process.info["cmdline"] or ()):
                found |= {child.pid: child for child in [process, *process.children(recursive=True)]}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return list(found.values())


def stop_ray_processes(temp_dir: str, timeout: float = 3) -> None:
    """Stop the Ray cluster whose temp folder is `temp_dir`, and only it: never `ray stop`, which
    stops every Ray on the machine (a benchmark running beside the tests too)."""
    import psutil

    processes = ray_processes(temp_dir)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive + ray_processes(temp_dir):  # and workers started while it was stopping
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def start_ray_head(port: int, env: dict, *options: str) -> None:
    """`ray start --head` on 127.0.0.1:port with `options`; returns once the head is up."""
    command = [BIN / "ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--disable-usage-stats"]
    subprocess.run([*command, *options], check=True, capture_output=True, env=env, timeout=120)


SHARED_HEAD: dict = {}  # the running `ray start` head of ray_head: its address, environment and temp folder


@pytest.fixture
def ray_head():
    """A real single-node Ray cluster started with `ray start --head` on loopback, in a temp folder
    of its own: its processes are found by it and stopped alone, and a bare `ray.init()` elsewhere
    never finds this cluster's address file. One head serves consecutive tests that ask for it
    (each start costs seconds of CPU; its workers, torch imported, serve the next test); it stops
    after the last of them (pytest_runtest_teardown), and those tests run first and together
    (pytest_collection_modifyitems), so it is started once and never idles through other tests."""
    if not SHARED_HEAD:
        temp_dir = tempfile.mkdtemp(prefix="s2s-ray-", dir="/tmp")  # short: Ray's socket paths live under it
        port, dashboard = free_port(), free_port()
        # Ray >= 2.59 enables token authentication on local clusters: every client needs the token
        env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # job entrypoints run `python` from this venv
        head = {
            "gcs": f"127.0.0.1:{port}",
            "dashboard": f"http://127.0.0.1:{dashboard}",
            "env": env,
            "temp_dir": temp_dir,
        }
        SHARED_HEAD.update(head)
        try:
            start_ray_head(
                port,
                env,
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={free_port()}",
                "--num-cpus=2",
                f"--temp-dir={temp_dir}",
            )
        except BaseException:  # what a start that failed half-way left running goes, and the next test starts afresh
            stop_shared_head()
            raise
    return SHARED_HEAD


def stop_shared_head() -> None:
    if SHARED_HEAD:
        stop_ray_processes(SHARED_HEAD["temp_dir"])
        shutil.rmtree(SHARED_HEAD["temp_dir"], ignore_errors=True)
        SHARED_HEAD.clear()


@pytest.fixture(scope="session")
def local_ray():
    """Ray started in this process (`ray.init`, 2 CPUs, no dashboard), shared like ray_head by the
    consecutive tests that ask for it, directly or through a fixture of theirs: one start (seconds
    of CPU) and one Ray job, whose worker processes, torch imported, serve the next test. Shut down
    after the last of them (pytest_runtest_teardown): tests that start a Ray of their own come later."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def stop_local_ray() -> None:
    import ray

    ray.shutdown()


# What a group of consecutive tests shares, in the order the groups run, and how it stops.
SHARED = {"ray_head": stop_shared_head, "local_ray": stop_local_ray}


def uses(item, shared: str) -> bool:
    return shared in getattr(item, "fixturenames", ())  # the whole closure: a fixture's own fixtures too


def pytest_collection_modifyitems(items):
    """The tests on the shared head first, then those on the local Ray, each in their own order
    (a stable sort), then the rest."""
    items.sort(key=lambda item: next((rank for rank, shared in enumerate(SHARED) if uses(item, shared)), len(SHARED)))


def pytest_runtest_teardown(item, nextitem):
    """Stop what a group shares once the next test does not use it (or there is none)."""
    for shared, stop in SHARED.items():
        if uses(item, shared) and (nextitem is None or not uses(nextitem, shared)):
            stop()


def pytest_sessionfinish(session, exitstatus):
    for stop in SHARED.values():  # also after an interrupted run
        stop()


class TcpProxy:
    """Forwards 127.0.0.1:port to a target port; `down()` makes every new and open connection
    fail at once (what a store outage looks like to a client), `up()` restores it;
    `hold_next_request(seconds)` holds the next request that long before the target gets it
    (to the client, a server slow to answer once; holding the answer instead would outlast the
    server's keep-alive and close the connection under the client)."""

    def __init__(self, target: int):
        self.target, self.port, self.is_up, self.hold = target, free_port(), True, 0.0
        self.connections: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if not self.is_up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(source, sink, source is client), daemon=True).start()

    def pipe(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and self.hold:
                    seconds, self.hold = self.hold, 0.0
                    time.sleep(seconds)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def down(self) -> None:
        self.is_up = False
        for connection in self.connections:
            connection.close()
        self.connections = []

    def up(self) -> None:
        self.is_up = True

    def hold_next_request(self, seconds: float) -> None:
        self.hold = seconds


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:port with a SQLite store and served artifacts in `folder`,
    in its own process group (its uvicorn workers survive a kill of the parent alone)."""
    server = subprocess.Popen(
        [
            BIN / "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def healthy() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            return False

    wait_until(healthy, 120, "the MLflow server")
    return server


def stop_server(server: subprocess.Popen, signum: int = signal.SIGTERM) -> None:
    """Signal the server's whole process group and wait for its parent."""
    try:
        os.killpg(server.pid, signum)
    except ProcessLookupError:
        pass
    server.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server)
