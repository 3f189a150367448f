"""Denoise a whole dataset on Ray: one task per image, the driver records.

    table = run_dataset(open_dataset("demo"), S2SConfig(steps=150, passes=30, lambda_iqa=0.0), RunOptions(out="outputs"))

Workers compute: each task trains a fresh Self2Self+ network on one image and returns the
denoised image with its metrics. The driver loads images, submits tasks with a bounded
number in flight, collects results as they finish (ray.wait) and is the only writer of
PNGs, Parquet rows and MLflow records, so a multi-node cluster needs no shared disk.

Faults: a task whose worker or node dies is retried by Ray (`max_retries`); an error in
the image itself (corrupt file, too small) is not retried: it becomes a `failed` row and
the rest goes on. Resume: a run id that already has rows skips those images, so after
any crash every image ends up in the table exactly once.
"""

import hashlib
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch
import yaml

from model.config import S2SConfig
from model.denoiser import denoise
from s2s_sweep.datasets import Dataset
from s2s_sweep.images import encode_png, to_uint8
from s2s_sweep.metrics import calculate_psnr, calculate_ssim
from s2s_sweep.results import SCHEMA, ResultsTable, parquet_bytes, read_results
from s2s_sweep.store import OutputStore
from s2s_sweep.tracking import RunTracker, check_reachable, contact_sheet, resolve_tracking_uri

SOURCE_DIRS = ("model", "s2s_sweep")
SHEET_IMAGES = 4


@dataclass
class RunOptions:
    out: str = "outputs"  # local folder or filesystem URI
    run_id: str | None = None  # None: a new run with a fresh id; else that run, continued if it exists
    resume: bool = False  # the run must exist already (the CLI's --resume)
    cpus_per_image: float = 1.0
    gpus_per_image: float | None = None  # None: 1 when the cluster has GPUs, else 0
    address: str | None = None  # Ray address; None: $RAY_ADDRESS, else a local Ray
    mlflow_uri: str | None = None
    max_retries: int = 3  # for worker/node deaths only
    flush_seconds: float = 30.0
    extra_params: dict = field(default_factory=dict)  # more MLflow params (e.g. the CLI's --config)


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


def config_hash(config: S2SConfig) -> str:
    """Hash of the settings that change results (not device, logging or weights location)."""
    keep = {k: v for k, v in asdict(config).items() if k not in ("device", "log_every", "iqa_weights")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def denoise_image(image_id: str, noisy: np.ndarray, clean: np.ndarray | None, config: S2SConfig, cpus: float) -> dict:
    """The work of one Ray task: train, denoise, score. Plain function, so it also runs without Ray."""
    torch.set_num_threads(max(1, int(cpus)))
    result = denoise(noisy, config)
    scored = clean is not None
    return {
        "image_id": image_id,
        "denoised": to_uint8(result.denoised),
        "psnr": calculate_psnr(result.denoised, clean) if scored else None,
        "ssim": calculate_ssim(result.denoised, clean) if scored else None,
        "train_seconds": result.train_seconds,
        "inference_seconds": result.inference_seconds,
        "device": result.device,
        "node": ray.util.get_node_ip_address() if ray.is_initialized() else "local",
        "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local",
    }


class Progress:
    """Images done / total, failures, mean PSNR so far and ETA, one line per finished image."""

    def __init__(self, total: int, already_done: int):
        self.total, self.done, self.failed = total, already_done, 0
        self.started_done = already_done
        self.started = time.monotonic()
        self.psnrs: list[float] = []
        self.ssims: list[float] = []

    def update(self, row: dict) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        if row["psnr"] is not None:
            self.psnrs.append(row["psnr"])
            self.ssims.append(row["ssim"])
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.started_done) / elapsed  # images per second in this session
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        detail = f"PSNR {row['psnr']:.2f}" if row["psnr"] is not None else row["status"]
        print(
            f"[{self.done}/{self.total}] {row['image_id']}: {detail} | failed {self.failed}"
            f" | mean PSNR {self.mean_psnr:.2f} | {3600 * rate:.1f} img/h | ETA {format_seconds(eta)}",
            flush=True,
        )

    @property
    def mean_psnr(self) -> float:
        return float(np.mean(self.psnrs)) if self.psnrs else float("nan")

    @property
    def mean_ssim(self) -> float:
        return float(np.mean(self.ssims)) if self.ssims else float("nan")


def format_seconds(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "--:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:500]


class DatasetRun:
    """The driver's side of one run: writes outputs and records as results arrive."""

    def __init__(self, dataset: Dataset, config: S2SConfig, options: RunOptions, store: OutputStore, tracker: RunTracker):
        self.config, self.options, self.store, self.tracker = config, options, store, tracker
        self.run_id = options.run_id
        self.folder = f"{dataset.key}/{self.run_id}"
        self.table = ResultsTable(store, dataset.key, self.run_id, options.flush_seconds)
        self.version, self.hash = code_version(), config_hash(config)
        self.sheet: list[tuple] = []
        self.compute_seconds = 0.0

    def row(self, image_id: str, noisy: np.ndarray | None, clean: np.ndarray | None, result: dict | None, error: str | None) -> dict:
        """Write the PNG (for a result) and record the row."""
        row = dict.fromkeys(SCHEMA.names)
        row.update(
            run_id=self.run_id, image_id=image_id, status="failed" if error else "ok", error=error,
            p=self.config.p, steps=self.config.steps, lambda_iqa=self.config.lambda_iqa, passes=self.config.passes,
            seed=self.config.seed, code_version=self.version, config_hash=self.hash, finished_at=datetime.now(timezone.utc),
        )  # fmt: skip
        if noisy is not None:
            row.update(height=noisy.shape[0], width=noisy.shape[1], channels=noisy.shape[2])
        if noisy is not None and clean is not None:
            row.update(noisy_psnr=calculate_psnr(noisy, clean), noisy_ssim=calculate_ssim(noisy, clean))
        if result is not None:
            output = f"images/{image_id}.png"
            self.store.write_bytes(f"{self.folder}/{output}", encode_png(result["denoised"]))
            row.update({k: result[k] for k in ("psnr", "ssim", "train_seconds", "inference_seconds", "device", "node", "node_id")}, output=output)
            self.compute_seconds += result["train_seconds"] + result["inference_seconds"]
            if len(self.sheet) < SHEET_IMAGES:
                self.sheet.append((to_uint8(noisy), result["denoised"], None if clean is None else to_uint8(clean)))
        self.table.add(row)
        return row


def connect_ray(address: str | None) -> None:
    """Connect to the cluster at `address` (or $RAY_ADDRESS), else start Ray locally; fail fast
    when an explicit address does not answer, instead of Ray's long connection retries."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("auto", "local"):
        host, _, port = address.split("://")[-1].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except (OSError, ValueError) as error:
            raise ConnectionError(f"Ray address {address}: not reachable ({error}); start the cluster or fix --address / RAY_ADDRESS") from None
    ray.init(address=address, log_to_driver=False)


def open_outputs(out: str, mlflow_uri: str | None) -> tuple[OutputStore, str]:
    """The output store and the MLflow tracking URI, both checked before any training."""
    store = OutputStore(out)
    store.check_writable()
    uri = resolve_tracking_uri(mlflow_uri, store)
    check_reachable(uri)
    return store, uri


def read_record(store: OutputStore, path: str, resume: bool, run_id: str) -> dict:
    """The JSON record (run.json / sweep.json) of an earlier session, {} if none; --resume needs one."""
    record = json.loads(store.read_text(path) or "{}")
    if resume and not record:
        raise ValueError(f"--resume {run_id}: nothing to resume, {store.path(path)} does not exist")
    return record


def run_dataset(dataset: Dataset, config: S2SConfig, options: RunOptions) -> pa.Table:
    """Denoise every image of `dataset` on the connected Ray cluster (started locally if none)
    and return the run's full results table (including rows of earlier sessions of the run)."""
    store, uri = open_outputs(options.out, options.mlflow_uri)
    options.run_id = options.run_id or new_run_id()
    folder = f"{dataset.key}/{options.run_id}"
    run_info = read_record(store, f"{folder}/run.json", options.resume, options.run_id)
    saved_config = store.read_text(f"{folder}/config.yaml")
    if saved_config is not None and config_hash(S2SConfig(**yaml.safe_load(saved_config))) != config_hash(config):
        raise ValueError(f"run {options.run_id}: its config.yaml differs from the requested configuration; resume it without --config/--set, or start a new run")

    recorded = set(read_results(store, dataset.key, options.run_id).column("image_id").to_pylist())
    todo = [image_id for image_id in dataset.ids if image_id not in recorded]
    tracker = RunTracker(uri, f"s2s-sweep/{dataset.key}", f"{Path(store.root) / 'mlartifacts'}" if store.local else None)
    connect_ray(options.address)
    resources = ray.cluster_resources()
    if options.gpus_per_image is None:
        options.gpus_per_image = 1.0 if resources.get("GPU", 0) else 0.0
    if options.gpus_per_image and not resources.get("GPU", 0):
        raise ValueError(f"--gpus-per-image {options.gpus_per_image}: the Ray cluster has no GPUs; use --gpus-per-image 0 to run on CPUs")
    params = {
        **asdict(config), **options.extra_params, "dataset": dataset.name, "images": len(dataset), "run_id": options.run_id,
        "code_version": code_version(), "config_hash": config_hash(config), "out": options.out,
        "cpus_per_image": options.cpus_per_image, "gpus_per_image": options.gpus_per_image,
        "cluster_cpus": resources.get("CPU", 0), "cluster_gpus": resources.get("GPU", 0), "cluster_nodes": len(ray.nodes()),
    }  # fmt: skip
    mlflow_run_id = tracker.start(options.run_id, params, resume_run_id=run_info.get("mlflow_run_id"))
    store.write_bytes(f"{folder}/config.yaml", yaml.safe_dump(asdict(config), sort_keys=False).encode())
    store.write_bytes(f"{folder}/run.json", json.dumps({"dataset": dataset.name, "run_id": options.run_id, "mlflow_run_id": mlflow_run_id, "tracking_uri": uri}).encode())
    print(f"run {options.run_id}: {dataset.name}, {len(todo)} of {len(dataset)} images to do, outputs in {store.path(folder)}", flush=True)

    run = DatasetRun(dataset, config, options, store, tracker)
    progress = Progress(len(dataset), len(recorded))
    slots = resources.get("GPU", 0) / options.gpus_per_image if options.gpus_per_image else resources.get("CPU", 1) / max(options.cpus_per_image, 1e-9)
    max_in_flight = max(2, int(2 * slots))
    task = ray.remote(denoise_image).options(
        num_cpus=options.cpus_per_image, num_gpus=options.gpus_per_image, max_retries=options.max_retries, retry_exceptions=False
    )
    pending: dict = {}  # ObjectRef -> (image_id, noisy, clean)
    queue = iter(todo)
    started = time.monotonic()
    try:
        while True:
            for image_id in queue:
                try:
                    noisy, clean = dataset.load(image_id)
                except ValueError as error:  # corrupt or mismatched files: record, go on
                    progress.update(run.row(image_id, None, None, None, one_line(error)))
                    continue
                pending[task.remote(image_id, noisy, clean, config, options.cpus_per_image)] = (image_id, noisy, clean)
                if len(pending) >= max_in_flight:
                    break
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            image_id, noisy, clean = pending.pop(ready[0])
            try:
                result, error = ray.get(ready[0]), None
            except ray.exceptions.RayTaskError as failure:  # the image's own error: not retried
                result, error = None, one_line(failure.cause) if failure.cause else one_line(failure)
            except ray.exceptions.RayError as failure:  # worker/node died after all retries
                result, error = None, one_line(failure)
            progress.update(run.row(image_id, noisy, clean, result, error))
            running = {"mean_psnr": progress.mean_psnr, "mean_ssim": progress.mean_ssim, "images_done": progress.done, "images_failed": progress.failed}
            tracker.log_metrics(running, step=progress.done)
    finally:
        run.table.flush()

    table = read_results(store, dataset.key, options.run_id)
    finish_tracking(run, table, time.monotonic() - started, len(todo))
    print(f"MLflow: {tracker.ui_command()}", flush=True)
    return table


def finish_tracking(run: DatasetRun, table: pa.Table, wall_seconds: float, attempted: int) -> None:
    """Final metrics and artifacts: mean PSNR/SSIM, throughput, the table, config and a contact sheet."""
    ok = table.filter(pc.equal(table["status"], "ok"))
    failed = table.num_rows - ok.num_rows
    resource = run.options.gpus_per_image or run.options.cpus_per_image
    metrics = {
        "final_mean_psnr": pc.mean(ok["psnr"]).as_py() if ok.num_rows else None,
        "final_mean_ssim": pc.mean(ok["ssim"]).as_py() if ok.num_rows else None,
        "images_ok": ok.num_rows,
        "images_failed": failed,
        "images_per_hour": 3600 * attempted / wall_seconds if wall_seconds > 0 else None,
        "compute_hours": run.compute_seconds / 3600,
        ("gpu_hours" if run.options.gpus_per_image else "cpu_hours"): resource * run.compute_seconds / 3600,
    }
    run.tracker.log_metrics(metrics, step=table.num_rows)
    run.tracker.log_artifact_bytes("results.parquet", parquet_bytes(table))
    run.tracker.log_artifact_bytes("config.yaml", yaml.safe_dump(asdict(run.config), sort_keys=False).encode())
    if run.sheet:
        run.tracker.log_image("contact_sheet.png", contact_sheet(run.sheet))
    run.tracker.finish(failed=failed > 0)
    mean = metrics["final_mean_psnr"]
    print(
        f"done: {ok.num_rows} ok, {failed} failed of {table.num_rows}; mean PSNR "
        f"{'n/a' if mean is None else f'{mean:.2f} dB'}; table {run.store.path(run.folder)}/results",
        file=sys.stdout,
        flush=True,
    )
