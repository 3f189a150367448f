"""What a run and a sweep both open before any work: the output store, the tracking URI,
their JSON record (run.json / sweep.json) and the Ray connection. All checked up front, so
a wrong address or an unwritable store is a one-line error before anything is computed.
"""

import hashlib
import json
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import ray

from s2s_sweep.configs import ConfigError
from s2s_sweep.errors import RayUnreachable, raise_on_sigterm
from s2s_sweep.store import OutputStore
from s2s_sweep.tracking import check_reachable, resolve_tracking_uri
from s2s_sweep.uris import redact

# Ray retries a task killed by its memory monitor forever by default; a bounded number turns
# an image that never fits into a failed row instead of an endless loop.
OOM_RETRIES = 2


def oom_retries() -> int:
    """The retries after a memory-monitor kill in effect for this driver (its own setting, or a user's)."""
    return int(os.environ.get("RAY_task_oom_retries", OOM_RETRIES))


@dataclass
class Session:
    store: OutputStore
    tracking_uri: str
    id: str  # the run or sweep id
    folder: str  # where its files live in the store
    record: dict  # the JSON record of an earlier session of the same id ({} when new)


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def open_session(
    out: str, mlflow_uri: str | None, folder_of, record_name: str, run_id: str | None, resume: bool
) -> Session:
    """Open the store and tracking URI for run `run_id` (a fresh id when None); `folder_of(id)` is
    its folder in the store. `resume` requires an earlier record."""
    store = OutputStore(out)
    store.check_writable()
    uri = resolve_tracking_uri(mlflow_uri, store)
    check_reachable(uri)
    run_id = run_id or new_run_id()
    folder = folder_of(run_id)
    record = json.loads(store.read_text(f"{folder}/{record_name}") or "{}")
    if resume and not record:
        raise ConfigError(
            f"--resume {run_id}: nothing to resume, {store.path(f'{folder}/{record_name}')} does not exist"
        )
    return Session(store, uri, run_id, folder, record)


SOURCE_DIRS = ("model", "s2s_sweep")  # what code_version hashes


def code_version() -> str:
    """Package version + hash of the source files: identifies the code even without git."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(p for d in SOURCE_DIRS for p in (root / d).glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    try:
        package = version("s2s-sweep")
    except PackageNotFoundError:
        package = "0+unknown"
    return f"{package}+{digest.hexdigest()[:10]}"


def write_record(session: Session, record_name: str, record: dict) -> None:
    session.store.write_bytes(
        f"{session.folder}/{record_name}", json.dumps({**record, "tracking_uri": redact(session.tracking_uri)}).encode()
    )


def unreachable(address: str) -> str | None:
    """Why nothing answers at Ray address host:port within 3 s, or None when something does."""
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except (OSError, ValueError) as error:
        return str(error)
    return None


def recorded_ray_address() -> str | None:
    """The address the last `ray start` on this machine recorded in Ray's temp folder
    (`ray_current_cluster`), which Ray joins when given no address or "auto"; None if there is none."""
    from ray._private.utils import read_ray_address  # Ray's own reader of that file

    try:
        return read_ray_address()
    except OSError:
        return None


def connect_ray(address: str | None) -> None:
    """Connect to the cluster at `address` (or $RAY_ADDRESS), else start Ray locally; fail fast
    when the address does not answer, instead of Ray's long connection retries — also where no
    address is given and Ray would join a cluster a crash left recorded on this machine (Ray
    retries that dead address forever)."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS") == "":  # set but empty, as many shells and CI leave it
        del os.environ["RAY_ADDRESS"]
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("auto", "local"):
        if why := unreachable(address):
            raise RayUnreachable(
                f"Ray address {address}: not reachable ({why}); start the cluster or fix --address / RAY_ADDRESS"
            )
    elif address != "local" and (recorded := recorded_ray_address()) and (why := unreachable(recorded)):
        raise RayUnreachable(
            f"Ray: a cluster recorded on this machine at {recorded} (Ray's temp folder, ray_current_cluster) does not "
            f"answer ({why}); run `ray stop` to clear it, or pass --address local to start a fresh Ray"
        )
    os.environ.setdefault("RAY_task_oom_retries", str(OOM_RETRIES))  # read by this driver, the tasks' owner
    ray.init(address=address, log_to_driver=False)
    if threading.current_thread() is threading.main_thread():
        raise_on_sigterm()  # ray.init installed its own SIGTERM handler, which would exit without our records
