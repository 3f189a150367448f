"""Denoise a whole dataset on Ray: one task per image, the driver records.

    method = Method("s2s+", S2SConfig(steps=500, passes=50, lambda_iqa=0.0))  # or Method("cbm3d"), ...
    outcome = run_dataset(open_dataset("demo"), method, RunOptions(out="outputs"))

Workers compute: each task trains a fresh Self2Self+ network on one image and returns the
denoised image with its metrics. The driver loads each image just before submitting it,
hands it to the task through Ray's object store (keeping no copy), collects results as
they finish and is the only writer of PNGs, Parquet rows and MLflow records, so a
multi-node cluster needs no shared disk.

Elastic: the number of images in flight (twice the cluster's slots) is re-read from the
live cluster every second, so a node that joins gets work at once and one that leaves
only shrinks it; the rest of the dataset is announced to Ray's autoscaler
(`request_resources`), so an autoscaling cluster grows to what the dataset needs.
Memory: every image is planned from its size (file header, no decoding; model/memory.py),
its task asks Ray for that much memory, images go largest first, and an image that cannot
fit any node becomes a failed row before it starts.

Warm starts (`init: warm`): one task first trains the seed network, the run saves it as
seed.pt and puts it in the object store once, and every image's task starts from it (load_seed).

Faults: a task whose worker or node dies is retried by Ray (`max_retries`; a task killed by
Ray's memory monitor `OOM_RETRIES` times); an error in the image itself (corrupt file, too
small) is not retried: it becomes a `failed` row and the rest goes on. Resume: a run id
that already has rows skips those images (`retry_failed` reruns the failed ones), so after
any crash every image ends up in the table exactly once. MLflow is a view of the Parquet
record: an outage is warned once and caught up by a resume (see tracking.py).
"""

import contextlib
import hashlib
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import yaml
from ray.autoscaler.sdk import request_resources

from model.memory import MB, DoesNotFit, Plan
from model.sizes import check_image_size
from s2s_sweep.configs import ConfigError
from s2s_sweep.datasets import Dataset, DatasetError
from s2s_sweep.errors import EXIT_IMAGES_FAILED, EXIT_OK, EXIT_TRACKING_BEHIND, USER_ERRORS, stop_request
from s2s_sweep.images import ImageError, encode_png, to_uint8
from s2s_sweep.methods import Method, denoise_image, load_seed, train_seed_task
from s2s_sweep.results import SCHEMA, ResultsTable, compact_results, parquet_bytes, read_results
from s2s_sweep.session import Session, code_version, connect_ray, oom_retries, open_session, write_record
from s2s_sweep.store import DEFAULT_FALLBACK, HeldWrites, StoreLost, read_file, upload_fallback
from s2s_sweep.tracking import RunTracker, contact_sheet, running_metrics, sheet_crop
from s2s_sweep.uris import adopt_credentials, redact

SHEET_IMAGES = 4
MAX_DEMAND = 1000  # bundles announced to the autoscaler at once (it caps at its max workers anyway)


@dataclass
class RunOptions:
    out: str = "outputs"  # local folder or filesystem URI
    run_id: str | None = None  # None: a new run with a fresh id; else that run, continued if it exists
    resume: bool = False  # the run must exist already (the CLI's --resume)
    retry_failed: bool = False  # also rerun the images recorded as failed, replacing their rows
    cpus_per_image: float = 1.0
    gpus_per_image: float | None = None  # None: 1 when the cluster has GPUs, else 0
    address: str | None = None  # Ray address; None: $RAY_ADDRESS, else a local Ray
    mlflow_uri: str | None = None
    max_retries: int = 3  # for worker/node deaths only
    flush_seconds: float = 30.0
    store_patience_seconds: float = 300.0  # how long finished images wait in memory for a store that is down
    fallback: str = str(DEFAULT_FALLBACK)  # local folder for them when the store stays down longer
    extra_params: dict = field(default_factory=dict)  # more MLflow params (e.g. the CLI's --config)


@dataclass
class RunOutcome:
    run_id: str
    table: pa.Table  # every row of the run, earlier sessions included, one per image
    tracking_behind: str | None  # why MLflow missed records this session; None when it is up to date

    @property
    def failed(self) -> int:
        return count_failed(self.table)

    @property
    def exit_status(self) -> int:
        if self.tracking_behind:
            return EXIT_TRACKING_BEHIND
        return EXIT_IMAGES_FAILED if self.failed else EXIT_OK


def count_failed(table: pa.Table) -> int:
    return table.num_rows - (pc.sum(pc.equal(table["status"], "ok")).as_py() or 0)


class Progress:
    """Images done / total, failures, mean PSNR so far and an ETA weighted by pixel count, one line per image."""

    def __init__(self, total: int, earlier: pa.Table, pixels_left: int):
        """`earlier`: the rows kept from earlier sessions of the run, which the running means include."""
        self.total, self.done = total, earlier.num_rows
        self.failed = count_failed(earlier)
        self.pixels_left, self.pixels_computed, self.computed = pixels_left, 0, 0
        self.started = time.monotonic()
        self.psnrs: list[float] = [v for v in earlier.column("psnr").to_pylist() if v is not None]
        self.ssims: list[float] = [v for v in earlier.column("ssim").to_pylist() if v is not None]

    def update(self, row: dict, pixels: int) -> None:
        self.done += 1
        self.pixels_left -= pixels
        if row["status"] == "ok":  # failed rows cost no compute: they count as done, not into the rate
            self.computed += 1
            self.pixels_computed += pixels
        else:
            self.failed += 1
        if row["psnr"] is not None:
            self.psnrs.append(row["psnr"])
            self.ssims.append(row["ssim"])
        elapsed = time.monotonic() - self.started
        pixel_rate = self.pixels_computed / elapsed
        eta = self.pixels_left / pixel_rate if pixel_rate > 0 else float("inf")
        detail = f"PSNR {row['psnr']:.2f}" if row["psnr"] is not None else row["status"]
        print(
            f"[{self.done}/{self.total}] {row['image_id']}: {detail} | failed {self.failed}"
            f"{f' | mean PSNR {self.mean_psnr:.2f}' if self.psnrs else ''} | {3600 * self.computed / elapsed:.1f} "
            f"img/h | ETA {format_seconds(eta)}",
            flush=True,
        )

    @property
    def running(self) -> dict[str, float]:
        return running_metrics(self.psnrs, self.ssims, self.done, self.failed)

    @property
    def mean_psnr(self) -> float:
        return self.running["mean_psnr"]


def format_seconds(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "--:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:500]


@dataclass
class InFlight:
    image_id: str
    pixels: int
    sheet: tuple | None  # centre crops of noisy and clean for the contact sheet (first images only)


class DatasetRun:
    """The driver's side of one run: plans, submits, collects and records images as they finish."""

    def __init__(
        self,
        dataset: Dataset,
        method: Method,
        options: RunOptions,
        session: Session,
        tracker: RunTracker,
        gpus_per_image: float,
    ):
        self.dataset, self.method, self.options, self.tracker = dataset, method, options, tracker
        self.store, self.run_id, self.folder = session.store, session.id, session.folder
        self.gpus_per_image = gpus_per_image
        self.device_type = "cuda" if gpus_per_image else "cpu"
        self.writes = HeldWrites(
            self.store, options.store_patience_seconds, Path(options.fallback), f"--resume {self.run_id}"
        )
        self.table = ResultsTable(self.writes, dataset.key, self.run_id, options.flush_seconds)
        self.version = code_version()
        self.sheet: list[tuple] = []
        self.compute_seconds = 0.0
        self.task = ray.remote(denoise_image)
        self.task_options = {
            "num_cpus": options.cpus_per_image,
            "num_gpus": gpus_per_image,
            "max_retries": options.max_retries,
            "retry_exceptions": False,
        }
        self.seed: ray.ObjectRef | None = None  # a warm start's seed network, in Ray's object store once
        self.init_source: str | None = None

    def row(self, image_id: str, result: dict | None, error: str | None) -> dict:
        """Write the PNG (for a result) and record the row."""
        row = dict.fromkeys(SCHEMA.names)
        row.update(
            **self.method.row_values(),
            run_id=self.run_id,
            image_id=image_id,
            image_seed=self.method.image_seed(image_id),
            status="failed" if error else "ok",
            error=error,
            code_version=self.version,
            config_hash=self.method.row_hash(result and result.get("precision")),
            finished_at=datetime.now(timezone.utc),
            init_source=self.init_source,
        )
        if result is not None:
            output = f"images/{image_id}.png"
            self.writes.write_bytes(f"{self.folder}/{output}", encode_png(result["denoised"]))
            height, width, channels = result["denoised"].shape
            row.update(
                {k: v for k, v in result.items() if k in SCHEMA.names},
                output=output,
                height=height,
                width=width,
                channels=channels,
            )
            self.compute_seconds += result["train_seconds"] + result["inference_seconds"]
        self.table.add(row)
        return row

    def slots(self) -> int:
        """Images the live cluster runs at once, re-read every call (nodes join and leave)."""
        resources = ray.cluster_resources()
        if self.gpus_per_image:
            return max(1, int(resources.get("GPU", 0) / self.gpus_per_image))
        return max(1, int(resources.get("CPU", 0) / max(self.options.cpus_per_image, 1e-9)))

    def bundle(self, plan: Plan) -> dict:
        bundle = {"CPU": self.options.cpus_per_image, "memory": plan.host_bytes}
        return {**bundle, "GPU": self.gpus_per_image} if self.gpus_per_image else bundle

    def load_seed(self) -> None:
        """A warm start's seed network into Ray's object store, once for the run: `init: PATH` reads
        a saved one; `init: warm` reuses the run's seed.pt (a resume) or trains it on the dataset's
        first `warm_images` images as one task, and saves it with the run and to MLflow."""
        config, start = self.method.config, self.method.run
        if start.init == "cold":  # always for a method without warm starts (only S2S+ takes `init`)
            return
        if start.init != "warm":
            data = read_file(start.init, "init:")
            self.init_source = f"{redact(start.init)} sha256:{hashlib.sha256(data).hexdigest()[:12]}"
        else:
            seed_ids = self.dataset.ids[: start.warm_images]
            self.init_source = f"run {self.run_id} seed.pt, {config.steps} steps on {', '.join(seed_ids)}"
            data = self.store.read_bytes(f"{self.folder}/seed.pt")
            if data is not None:
                print(f"seed: reusing this run's seed.pt ({self.init_source})", flush=True)
            else:
                print(f"seed: training on {', '.join(seed_ids)}, {config.steps} steps each", flush=True)
                images, memory = self.seed_images(seed_ids)
                task = ray.remote(train_seed_task).options(**self.task_options, memory=memory)
                data, seconds = ray.get(task.remote(images, config, self.options.cpus_per_image))
                self.compute_seconds += seconds
                self.store.write_bytes(f"{self.folder}/seed.pt", data)
                self.tracker.log_artifact_bytes("seed.pt", data)
                print(
                    f"seed: trained in {format_seconds(seconds)}; every image starts from it and trains "
                    f"{start.image_steps(config.steps)} steps",
                    flush=True,
                )
        self.seed = ray.put(load_seed(data, start.init))

    def seed_images(self, seed_ids: tuple[str, ...]) -> tuple[list[np.ndarray], int]:
        """The noisy images a warm start's seed trains on, and the memory its task needs; an image
        that cannot be one is a one-line error before anything is trained."""
        images, memory = [], 0
        for image_id in seed_ids:
            try:
                noisy = self.dataset.load(image_id)[0]
                check_image_size(*noisy.shape[:2], name=f"{self.dataset.name}/{image_id}")
                memory = max(
                    memory, self.method.plan(*noisy.shape[:2], max_node_memory(), self.device_type, image_id).host_bytes
                )
            except USER_ERRORS as error:
                raise ConfigError(
                    f"init: warm: seed image {image_id} (the seed trains on the dataset's first {len(seed_ids)}): "
                    f"{error}; replace that image or start from a saved seed (init: PATH)"
                ) from None
            images.append(noisy)
        return images, memory

    def execute(self, sizes: dict[str, tuple[int, int]], progress: Progress) -> None:
        """Run every image of `sizes` ({id: (height, width)}), largest first, twice the live slots in flight.
        On GPUs the driver plans for the largest node's RAM and each task re-plans for its GPU's free memory."""
        budget = self.method.config.memory_mb * MB or max_node_memory()
        plans: dict[str, Plan | str] = {}  # the plan, or why the image cannot fit
        for image_id, (height, width) in sizes.items():
            try:
                plans[image_id] = self.method.plan(
                    height, width, budget, self.device_type, name=f"{self.dataset.name}/{image_id}"
                )
            except DoesNotFit as error:
                plans[image_id] = str(error)
        pixels = {image_id: height * width for image_id, (height, width) in sizes.items()}
        queue = deque(sorted(sizes, key=lambda i: -pixels[i]))  # longest-processing-time first
        pending: dict[ray.ObjectRef, InFlight] = {}
        demand = None
        while queue or pending:
            in_flight = 2 * self.slots()  # one look at the live cluster per turn
            while queue and len(pending) < in_flight:
                image_id = queue.popleft()
                plan = plans[image_id]
                if isinstance(plan, str):  # cannot fit: a failed row before it starts
                    progress.update(self.row(image_id, None, plan), pixels[image_id])
                    continue
                self.submit(image_id, plan, pixels[image_id], pending, progress)
            wanted = [self.bundle(plans[item.image_id]) for item in pending.values()]
            wanted += [
                self.bundle(plans[i])
                for i in islice(queue, max(0, MAX_DEMAND - len(wanted)))
                if not isinstance(plans[i], str)
            ]
            if wanted != demand:  # the rest of the dataset, visible to the autoscaler
                request_resources(bundles=wanted)
                demand = wanted
            self.writes.retry()  # what a store outage held back, when its backoff allows
            if not pending:
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                self.collect(ref, pending.pop(ref), progress)

    def submit(self, image_id: str, plan: Plan, pixels: int, pending: dict, progress: Progress) -> None:
        try:
            noisy, clean = self.dataset.load(image_id)
        except (DatasetError, ImageError) as error:  # corrupt or mismatched files: record, go on
            progress.update(self.row(image_id, None, one_line(error)), pixels)
            return
        sheet = (
            (sheet_crop(to_uint8(noisy)), None if clean is None else sheet_crop(to_uint8(clean)))
            if len(self.sheet) + len(pending) < SHEET_IMAGES
            else None
        )
        clean_ref = None if clean is None else ray.put(clean)
        ref = self.task.options(**self.task_options, memory=plan.host_bytes).remote(
            image_id,
            ray.put(noisy),
            clean_ref,
            self.method.fitted(plan),
            self.dataset.sigma,
            self.options.cpus_per_image,
            self.seed,
        )
        pending[ref] = InFlight(image_id, pixels, sheet)

    def collect(self, ref: ray.ObjectRef, item: InFlight, progress: Progress) -> None:
        try:
            result, error = ray.get(ref), None
        except ray.exceptions.RayTaskError as failure:  # the image's own error: not retried
            result, error = None, one_line(failure.cause) if failure.cause else one_line(failure)
            if not isinstance(failure.cause, USER_ERRORS):  # a bug, not the image: keep its traceback in the log
                print(f"{item.image_id}: internal error in its task\n{failure}", file=sys.stderr, flush=True)
        except ray.exceptions.OutOfMemoryError:
            result, error = (
                None,
                f"out of memory: Ray's memory monitor killed its task {oom_retries() + 1} times; give it a node with "
                "more RAM or a smaller --set memory_mb=",
            )
        except ray.exceptions.RayError as failure:  # worker/node died after all retries
            result, error = None, one_line(failure)
        row = self.row(item.image_id, result, error)
        if result is not None and item.sheet is not None:
            noisy, clean = item.sheet
            self.sheet.append((noisy, sheet_crop(result["denoised"]), clean))
        progress.update(row, item.pixels)
        self.tracker.log_metrics(progress.running, step=progress.done)


def max_node_memory() -> int:
    """The `memory` resource of the largest live node: what one task can be given at most."""
    return int(max((node["Resources"].get("memory", 0) for node in ray.nodes() if node["Alive"]), default=0))


def run_dataset(dataset: Dataset, method: Method, options: RunOptions) -> RunOutcome:
    """Denoise every image of `dataset` with `method` on the connected Ray cluster (started locally
    if none) and return the run's full results table (including rows of earlier sessions of the run)."""
    if "://" in method.run.init:  # a seed on object storage: its keys go where --out's go, never into config.yaml,
        # rows or MLflow
        method = replace(method, run=method.run.replace(init=adopt_credentials(method.run.init, "init:")))
    method.check_installed()
    session = open_session(
        options.out,
        options.mlflow_uri,
        lambda run_id: f"{dataset.key}/{run_id}",
        "run.json",
        options.run_id,
        options.resume,
    )
    store, run_id, folder = session.store, session.id, session.folder
    saved_config = store.read_text(f"{folder}/config.yaml")
    if saved_config is not None and Method.from_settings(yaml.safe_load(saved_config)).hash != method.hash:
        raise ConfigError(
            f"run {run_id}: its config.yaml differs from the requested method or configuration; resume it without "
            "--method/--config/--set, or start a new run"
        )

    uploaded = upload_fallback(store, Path(options.fallback), folder)
    if uploaded:
        print(
            f"run {run_id}: uploaded {uploaded} files an earlier session saved in {options.fallback} while the store "
            "was down",
            flush=True,
        )
    earlier = read_results(store, dataset.key, run_id)
    keep = earlier if not options.retry_failed else earlier.filter(pc.equal(earlier["status"], "ok"))
    recorded = set(keep.column("image_id").to_pylist())
    todo = [image_id for image_id in dataset.ids if image_id not in recorded]
    tracker = RunTracker(session.tracking_uri, f"s2s-sweep/{dataset.key}", store)
    connect_ray(options.address)
    resources = ray.cluster_resources()
    gpus_per_image = (
        options.gpus_per_image
        if options.gpus_per_image is not None
        else (1.0 if resources.get("GPU", 0) and method.spec.learned else 0.0)
    )
    if gpus_per_image and not resources.get("GPU", 0):
        raise ConfigError(
            f"--gpus-per-image {gpus_per_image}: the Ray cluster has no GPUs; use --gpus-per-image 0 to run on CPUs"
        )
    params = {
        **method.settings,
        **options.extra_params,
        "dataset": dataset.name,
        "images": len(dataset),
        "run_id": run_id,
        "dataset_sigma": "unknown" if dataset.sigma is None else dataset.sigma,
        "code_version": code_version(),
        "config_hash": method.hash,
        "out": store.uri,
        "cpus_per_image": options.cpus_per_image,
        "gpus_per_image": gpus_per_image,
        "cluster_cpus": resources.get("CPU", 0),
        "cluster_gpus": resources.get("GPU", 0),
        "cluster_nodes": len(ray.nodes()),
    }
    mlflow_run_id = tracker.start(
        method.run_name(dataset.name, run_id), params, resume_run_id=session.record.get("mlflow_run_id")
    )
    store.write_bytes(f"{folder}/config.yaml", yaml.safe_dump(method.settings, sort_keys=False).encode())
    write_record(session, "run.json", {"dataset": dataset.name, "run_id": run_id, "mlflow_run_id": mlflow_run_id})
    print(
        f"run {run_id}: {dataset.name} with {method.label}, {len(todo)} of {len(dataset)} images to do, outputs in "
        f"{store.path(folder)}",
        flush=True,
    )

    run = DatasetRun(dataset, method, options, session, tracker, gpus_per_image)
    sizes = {image_id: dataset.size(image_id) for image_id in todo}  # file headers only
    progress = Progress(len(dataset), keep, sum(height * width for height, width in sizes.values()))
    started = time.monotonic()
    try:
        if sizes:  # images left to do: their warm start's seed
            run.load_seed()
        run.execute(sizes, progress)
        run.table.flush()
        run.writes.retry(wait=True)
    except BaseException as error:
        if not isinstance(error, StoreLost):  # keep every finished image: in the store, or else in the fallback
            with contextlib.suppress(StoreLost):  # past the patience: saved to the fallback already
                run.table.flush()
            run.writes.close()
            if run.writes.saved:
                print(
                    f"{run.writes.saved} finished files saved in {options.fallback} (the store is down); --resume "
                    f"{run_id} uploads them",
                    file=sys.stderr,
                    flush=True,
                )
        tracker.finish("KILLED" if stop_request(error) else "FAILED")
        raise
    finally:
        request_resources(bundles=[])  # withdraw the demand from the autoscaler
    if options.retry_failed and len(recorded) < earlier.num_rows:
        compact_results(store, dataset.key, run_id)  # one row per image again
    table = read_results(store, dataset.key, run_id)
    finish_tracking(run, table, time.monotonic() - started, progress.computed)
    print(f"MLflow: {tracker.ui_command()}", flush=True)
    if tracker.behind:
        print(
            f"tracking behind: {tracker.behind}; Parquet and PNGs are complete; run --resume {run_id} when MLflow is "
            "back",
            file=sys.stderr,
            flush=True,
        )
    return RunOutcome(run_id, table, tracker.behind)


def finish_tracking(run: DatasetRun, table: pa.Table, wall_seconds: float, computed: int) -> None:
    """Bring MLflow in line with the table: running metrics it missed, final metrics and
    throughput, the table, config and a contact sheet, and the run's status."""
    ok = table.filter(pc.equal(table["status"], "ok"))
    failed = table.num_rows - ok.num_rows
    resource = run.gpus_per_image or run.options.cpus_per_image
    metrics = {
        "final_mean_psnr": pc.mean(ok["psnr"]).as_py() if ok.num_rows else None,
        "final_mean_ssim": pc.mean(ok["ssim"]).as_py() if ok.num_rows else None,
        "images_ok": ok.num_rows,
        "images_failed": failed,
        "images_per_hour": 3600 * computed / wall_seconds if computed and wall_seconds > 0 else None,
        "compute_hours": run.compute_seconds / 3600,
        ("gpu_hours" if run.gpus_per_image else "cpu_hours"): resource * run.compute_seconds / 3600,
    }
    run.tracker.catch_up(table)
    run.tracker.log_metrics(metrics, step=table.num_rows)
    run.tracker.log_artifact_bytes("results.parquet", parquet_bytes(table))
    run.tracker.log_artifact_bytes("config.yaml", yaml.safe_dump(run.method.settings, sort_keys=False).encode())
    if run.sheet:
        run.tracker.log_image("contact_sheet.png", contact_sheet(run.sheet))
    run.tracker.finish("FAILED" if failed else "FINISHED")
    mean = metrics["final_mean_psnr"]
    print(
        f"done: {ok.num_rows} ok, {failed} failed of {table.num_rows}; mean PSNR "
        f"{'n/a' if mean is None else f'{mean:.2f} dB'}; table {run.store.path(run.folder)}/results",
        flush=True,
    )
