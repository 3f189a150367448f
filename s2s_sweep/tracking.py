"""MLflow tracking of dataset runs: one experiment per dataset, one MLflow run per job.

Tracking URI: `--mlflow-uri`, else $MLFLOW_TRACKING_URI, else a SQLite store next to the
outputs (OUT/mlflow.db for a local OUT, ~/.cache/s2s-sweep/mlflow.db otherwise), with
artifacts in OUT/mlartifacts. Browse with the `mlflow ui` command printed at the end.

MLflow is a view of the Parquet record and never holds up the images: once the run is open,
every HTTP call is tried once with a short timeout, the first failure is warned once, and the
tracker stops calling for the rest of the session (`behind` says why). Opening it, before any
work, waits longer: a fresh `mlflow server` creates its database on its first request. A later
session of the run (`--resume RUN_ID`, even with nothing left to compute) logs what MLflow missed.
"""

import base64
import contextlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa

from model.errors import UserError
from s2s_sweep.errors import stops_held
from s2s_sweep.store import OutputStore
from s2s_sweep.uris import adopt_credentials, redact

SHEET_TILE = 128  # contact-sheet tiles are centre crops of this side
HTTP_TIMEOUT_SECONDS = 5  # one try per MLflow HTTP call, so an outage costs seconds, not the retries' minutes
# the calls that open the run, before any work: a fresh server's first request creates its database
# (MLflow's migrations: seconds, longer on a busy machine), which a 5 s timeout failed now and then
OPENING_TIMEOUT_SECONDS = 60
# MLflow 3's UI picks its view from this tag: the runs table and charts, not the GenAI traces view
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


class TrackingError(UserError, RuntimeError):
    """The MLflow tracking server cannot be reached or used."""


def resolve_tracking_uri(cli_uri: str | None, store: OutputStore) -> str:
    if cli_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return adopt_credentials(cli_uri or os.environ["MLFLOW_TRACKING_URI"], "--mlflow-uri")
    folder = Path(store.root) if store.local else Path.home() / ".cache" / "s2s-sweep"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_location(uri: str, store: OutputStore) -> str | None:
    """Where a new experiment keeps its artifacts: beside the outputs of a local store, beside the
    database of a SQLite store (MLflow's own default, ./mlruns, is wherever the job was started);
    a tracking server decides for itself."""
    if store.local:
        return str(Path(store.root) / "mlartifacts")
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts")
    return None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, before any training) when an MLflow server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    request = urllib.request.Request(f"{uri.rstrip('/')}/health")
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):  # the basic auth MLflow's own client sends
        user_password = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        request.add_header("Authorization", f"Basic {base64.b64encode(user_password.encode()).decode()}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        raise TrackingError(
            redact(f"--mlflow-uri {uri}: MLflow server not reachable ({getattr(error, 'reason', error)})")
        ) from None


def sheet_crop(image: np.ndarray | None) -> np.ndarray:
    """The contact-sheet tile of a uint8 image: its RGB centre crop of 128 px (black where none);
    an image smaller than that is enlarged by a whole factor first, pixels repeated, not smoothed."""
    canvas = np.zeros((SHEET_TILE, SHEET_TILE, 3), np.uint8)
    if image is None:
        return canvas
    image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    factor = max(1, SHEET_TILE // max(image.shape[:2]))
    image = image.repeat(factor, axis=0).repeat(factor, axis=1)
    top, left = max(0, (image.shape[0] - SHEET_TILE) // 2), max(0, (image.shape[1] - SHEET_TILE) // 2)
    crop = image[top : top + SHEET_TILE, left : left + SHEET_TILE]
    canvas[: crop.shape[0], : crop.shape[1]] = crop
    return canvas


def contact_sheet(triples: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """Rows of noisy | S2S+ | clean tiles (see sheet_crop)."""
    return np.concatenate([np.concatenate([sheet_crop(i) for i in row], axis=1) for row in triples], axis=0)


def running_history(table: pa.Table) -> list[dict[str, float]]:
    """The running metrics after each recorded image, in the order they finished: what the
    run logs live at step k = images done (mean PSNR/SSIM over the ok images so far)."""
    history, psnrs, ssims, failed = [], [], [], 0
    for row in sorted(table.to_pylist(), key=lambda r: r["finished_at"]):
        failed += row["status"] != "ok"
        if row["psnr"] is not None:
            psnrs.append(row["psnr"])
            ssims.append(row["ssim"])
        history.append(running_metrics(psnrs, ssims, len(history) + 1, failed))
    return history


def running_metrics(psnrs: list[float], ssims: list[float], done: int, failed: int) -> dict[str, float]:
    return {
        "mean_psnr": float(np.mean(psnrs)) if psnrs else float("nan"),
        "mean_ssim": float(np.mean(ssims)) if ssims else float("nan"),
        "images_done": done,
        "images_failed": failed,
    }


def metric_entities(metrics: dict[str, float | None], step: int) -> list:
    """MLflow Metric entities of the finite values, for log_batch (None and NaN are left out)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(key, float(value), now, step)
        for key, value in metrics.items()
        if value is not None and np.isfinite(value)
    ]


@contextlib.contextmanager
def opening_patience():
    """MLflow's HTTP calls inside wait up to OPENING_TIMEOUT_SECONDS; after, HTTP_TIMEOUT_SECONDS
    (MLflow reads $MLFLOW_HTTP_REQUEST_TIMEOUT at each call)."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(OPENING_TIMEOUT_SECONDS)
    try:
        yield
    finally:
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(HTTP_TIMEOUT_SECONDS)


class RunTracker:
    """One MLflow run for one dataset job (or sweep); resumes the same MLflow run when the job resumes.
    Opening it is checked (a TrackingError before any work); every later call is best effort."""

    def __init__(self, uri: str, experiment: str, store: OutputStore):
        import mlflow

        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        try:
            # the client opens its store at once, so a store MLflow refuses (an unknown scheme; a
            # plain folder, which MLflow >= 3.x turns away) fails here
            self.client = mlflow.MlflowClient(uri)
            with opening_patience():
                found = self.client.get_experiment_by_name(experiment)
                self.experiment_id = (
                    found.experiment_id
                    if found
                    else self.client.create_experiment(experiment, artifact_location=artifact_location(uri, store))
                )
                if not found or found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                    self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except Exception as error:
            raise TrackingError(
                redact(
                    f"--mlflow-uri {uri}: cannot use the tracking store ({type(error).__name__}: "
                    f"{str(error).strip().splitlines()[0]})"
                )
            ) from None
        self.uri = uri
        # a local SQLite store cut mid-write stays locked: stops wait for its calls (ms); a server's are not held,
        # so a stop during an outage is not kept waiting for the HTTP timeout
        self.hold_stops = uri.startswith("sqlite:")
        self.run_id: str | None = None
        self.behind: str | None = None  # the first failure of this session, once there is one

    def start(self, run_name: str, params: dict, resume_run_id: str | None = None, kind: str = "dataset-run") -> str:
        from mlflow.entities import Param

        try:
            with opening_patience():
                if resume_run_id:
                    self.run_id = resume_run_id
                    self.client.update_run(resume_run_id, status="RUNNING")
                else:
                    run = self.client.create_run(self.experiment_id, run_name=run_name, tags={"s2s_sweep.kind": kind})
                    self.run_id = run.info.run_id
                    logged = [Param(key, str(value)) for key, value in params.items()]
                    self.client.log_batch(self.run_id, params=logged)
        except Exception as error:
            raise TrackingError(
                redact(
                    f"--mlflow-uri {self.uri}: cannot start a run ({type(error).__name__}: "
                    f"{str(error).splitlines()[0]})"
                )
            ) from None
        return self.run_id

    def call(self, method: str, *args, **kwargs):
        """client.method(*args, **kwargs), or None once tracking has failed: a failure is warned
        once and then no more calls are made this session, so the work never waits on MLflow."""
        from mlflow.exceptions import MlflowException

        if self.behind:
            return None
        try:
            with stops_held() if self.hold_stops else contextlib.nullcontext():
                return getattr(self.client, method)(*args, **kwargs)
        except (
            MlflowException,
            OSError,
        ) as error:  # the server or store failed (requests' errors are OSErrors); a bug still raises
            self.behind = redact(
                f"MLflow at {self.uri} failed in {method} ({type(error).__name__}: "
                f"{(str(error).splitlines() or [''])[0][:200]})"
            )
            print(
                f"warning: {self.behind}; images go on, recorded in Parquet; no more MLflow calls this session",
                file=sys.stderr,
                flush=True,
            )
            return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.call("log_batch", self.run_id, metrics=metric_entities(metrics, step))

    def catch_up(self, table: pa.Table) -> None:
        """Log the running metrics of the images recorded after the last step MLflow has."""
        history = self.call("get_metric_history", self.run_id, "images_done")
        if history is None:
            return
        last = max((metric.step for metric in history), default=0)
        missed = [
            entity
            for step, metrics in enumerate(running_history(table), 1)
            if step > last
            for entity in metric_entities(metrics, step)
        ]
        for start in range(0, len(missed), 1000):  # MLflow's limit per batch
            self.call("log_batch", self.run_id, metrics=missed[start : start + 1000])

    def log_artifact_bytes(self, name: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            self.call("log_artifact", self.run_id, str(path))

    def log_image(self, name: str, image: np.ndarray) -> None:
        self.call("log_image", self.run_id, image, artifact_file=name)

    def finish(self, status: str) -> None:
        """End the MLflow run as FINISHED, FAILED or KILLED."""
        self.call("set_terminated", self.run_id, status=status)

    def runs_table(self) -> str:
        """The UI's address of this experiment's runs table, from the server's root. MLflow 3's UI
        opens an experiment on its GenAI overview whatever the experiment's kind tag says, unless
        the address asks for the machine-learning workflow."""
        return f"#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"

    def ui_command(self) -> str:
        """What to open to see this run among its experiment's runs (a server), or how to start a UI
        for a local store and where to go in it."""
        if self.uri.startswith(("http://", "https://")):
            return redact(f"open {self.uri.rstrip('/')}/{self.runs_table()} (run {self.run_id})")
        return redact(
            f"mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1, then open http://127.0.0.1:5000/{self.runs_table()}"
        )
