"""MLflow tracking of dataset runs: one experiment per dataset, one MLflow run per job.

Tracking URI: `--mlflow-uri`, else $MLFLOW_TRACKING_URI, else a SQLite store next to the
outputs (OUT/mlflow.db for a local OUT, ~/.cache/s2s-sweep/mlflow.db otherwise), with
artifacts in OUT/mlartifacts. Browse with the `mlflow ui` command printed at the end.
"""

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from s2s_sweep.store import OutputStore

SHEET_TILE = 128  # contact-sheet tiles are centre crops of this side


class TrackingError(RuntimeError):
    """The MLflow tracking server cannot be reached or used."""


def resolve_tracking_uri(cli_uri: str | None, store: OutputStore) -> str:
    if cli_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return cli_uri or os.environ["MLFLOW_TRACKING_URI"]
    folder = Path(store.root) if store.local else Path.home() / ".cache" / "s2s-sweep"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, before any training) when an MLflow server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        raise TrackingError(f"--mlflow-uri {uri}: MLflow server not reachable ({getattr(error, 'reason', error)})") from None


def contact_sheet(triples: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """Rows of noisy | S2S+ | clean (uint8 RGB, centre crops of 128 px; black where no clean)."""

    def tile(image: np.ndarray | None) -> np.ndarray:
        canvas = np.zeros((SHEET_TILE, SHEET_TILE, 3), np.uint8)
        if image is None:
            return canvas
        image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
        top, left = max(0, (image.shape[0] - SHEET_TILE) // 2), max(0, (image.shape[1] - SHEET_TILE) // 2)
        crop = image[top : top + SHEET_TILE, left : left + SHEET_TILE]
        canvas[: crop.shape[0], : crop.shape[1]] = crop
        return canvas

    return np.concatenate([np.concatenate([tile(i) for i in row], axis=1) for row in triples], axis=0)


class RunTracker:
    """One MLflow run for one dataset job; resumes the same MLflow run when the job resumes."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None):
        import mlflow

        self.client = mlflow.MlflowClient(uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment, artifact_location=artifact_location)
        except Exception as error:
            raise TrackingError(f"--mlflow-uri {uri}: cannot use the tracking store ({type(error).__name__}: {str(error).splitlines()[0]})") from None
        self.uri = uri
        self.run_id: str | None = None

    def start(self, run_name: str, params: dict, resume_run_id: str | None = None, kind: str = "dataset-run") -> str:
        if resume_run_id:
            self.run_id = resume_run_id
            self.client.update_run(resume_run_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags={"s2s_sweep.kind": kind})
            self.run_id = run.info.run_id
            for key, value in params.items():
                self.client.log_param(self.run_id, key, value)
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            if value is not None and np.isfinite(value):
                self.client.log_metric(self.run_id, key, float(value), step=step)

    def log_artifact_bytes(self, name: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            self.client.log_artifact(self.run_id, str(path))

    def log_image(self, name: str, image: np.ndarray) -> None:
        self.client.log_image(self.run_id, image, artifact_file=name)

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")

    def ui_command(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"open {self.uri} (experiment {self.experiment_id}, run {self.run_id})"
        return f"mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1"
