"""The per-image results table: Parquet, hive-partitioned by dataset, one row per image.

    OUT/DATASET/RUN_ID/results/dataset=DATASET/part-<time>-<uuid>.parquet

Rows are written by the driver in parts (a new file every `flush_seconds` and at the end),
each file complete or absent, so a crash loses at most the unflushed rows, which a resumed
run recomputes. A rerun of failed images (`--retry-failed`) supersedes their rows and then
compacts the parts into one, so there is one row per image. Read with pandas or DuckDB:

    pandas.read_parquet("OUT/demo/RUN_ID/results")
    duckdb.sql("SELECT * FROM read_parquet('OUT/*/*/results/**/*.parquet', hive_partitioning = true)")
"""

import io
import time
import uuid

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from s2s_sweep.store import OutputStore

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("image_id", pa.string()),
        ("status", pa.string()),  # "ok" or "failed"
        ("error", pa.string()),  # one line, failed rows only
        ("method", pa.string()),  # a name of s2s_sweep.methods.REGISTRY, e.g. S2S+'s "s2s+"
        (
            "settings",
            pa.string(),
        ),  # JSON: every setting of the method that changes results (its config_hash covers them)
        ("p", pa.float64()),  # p, steps, lambda_iqa, passes, seed: S2S+ only (null for a baseline)
        ("steps", pa.int64()),  # the steps this image trained: `steps` cold, `warm_steps` from a seed
        ("lambda_iqa", pa.float64()),
        ("passes", pa.int64()),
        ("seed", pa.int64()),  # the run's seed
        ("image_seed", pa.int64()),  # learned methods: the seed this image trained with (RunSettings.image_seed)
        (
            "ema_decay",
            pa.float64(),
        ),  # S2S+: 0 = read out the raw weights (the paper); else a moving average of them (model/averaging.py)
        (
            "lr_decay",
            pa.float64(),
        ),  # S2S+: 0 = a held learning rate (the paper); else the fraction of steps it falls over
        (
            "init",
            pa.string(),
        ),  # S2S+: "cold" (a fresh network), "warm" (the run's seed network) or "file" (a saved seed)
        (
            "init_source",
            pa.string(),
        ),  # where a warm start's weights came from: the run and its seed images, or the file and its hash
        ("quantize", pa.string()),  # how the output became 8-bit for its PNG and metrics: "round" or "floor"
        ("noise_sigma", pa.float64()),  # baselines: the noise σ (0..255) they were given
        ("sigma_source", pa.string()),  # baselines: "dataset" (its true σ) or "estimated" (from the noisy image)
        ("psnr", pa.float64()),  # dB, 8-bit protocol (s2s_sweep.metrics); null without a reference
        ("ssim", pa.float64()),
        ("noisy_psnr", pa.float64()),
        ("noisy_ssim", pa.float64()),
        ("ssim_3d", pa.float64()),  # SSIM as MATLAB's ssim scores an H x W x 3 array, a 3-D window (s2s_sweep.metrics)
        ("noisy_ssim_3d", pa.float64()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("channels", pa.int64()),
        ("train_seconds", pa.float64()),
        ("inference_seconds", pa.float64()),
        ("device", pa.string()),  # e.g. "cuda:0", "cpu"
        ("precision", pa.string()),  # S2S+: the arithmetic actually used, "fp32" or "bf16"
        ("crop", pa.int64()),  # side of the training crops; 0 = the whole image (the paper)
        ("crop_batch", pa.int64()),  # crops per training step
        ("tile", pa.int64()),  # side of the inference tiles; 0 = the whole image
        ("memory_mb", pa.float64()),  # predicted peak memory of the image (model/memory.py)
        ("peak_memory_mb", pa.float64()),  # measured: GPU memory on CUDA, the worker's peak RSS on CPU
        ("parameters", pa.int64()),  # trained parameters of a learned method's network; null for a classic one
        ("node", pa.string()),  # IP address of the Ray node that ran it
        ("node_id", pa.string()),  # Ray's node id (several nodes may share an address)
        ("output", pa.string()),  # path of the denoised PNG, relative to the run folder
        ("code_version", pa.string()),
        ("config_hash", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)


def parquet_bytes(table: pa.Table) -> bytes:
    """A whole Parquet file in memory, for the output store and MLflow artifacts."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def results_dir(dataset: str, run_id: str) -> str:
    return f"{dataset}/{run_id}/results"


class ResultsTable:
    """Appends rows of one run to its Parquet dataset in the output store."""

    def __init__(self, store: OutputStore, dataset: str, run_id: str, flush_seconds: float = 30.0):
        self.store = store
        self.partition = f"{results_dir(dataset, run_id)}/dataset={dataset}"
        self.flush_seconds = flush_seconds
        self.pending: list[dict] = []
        self.last_flush = time.monotonic()

    def add(self, row: dict) -> None:
        self.pending.append(row)
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            table = pa.Table.from_pylist(self.pending, schema=SCHEMA)
            self.store.write_bytes(
                f"{self.partition}/part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet", parquet_bytes(table)
            )
            self.pending = []
        self.last_flush = time.monotonic()


def read_results(store: OutputStore, dataset: str, run_id: str) -> pa.Table:
    """The run's rows, the latest one per image, with the `dataset` partition column (empty when none yet)."""
    schema = SCHEMA.append(pa.field("dataset", pa.string()))
    folder = results_dir(dataset, run_id)
    if not store.exists(folder):
        return schema.empty_table()
    partitioning = pads.partitioning(pa.schema([("dataset", pa.string())]), flavor="hive")
    table = pads.dataset(store.path(folder), filesystem=store.fs, schema=schema, partitioning=partitioning).to_table()
    table = table.sort_by([("finished_at", "ascending")])
    latest = {image_id: index for index, image_id in enumerate(table["image_id"].to_pylist())}  # later rows win
    return table.take(sorted(latest.values()))


def compact_results(store: OutputStore, dataset: str, run_id: str) -> None:
    """Rewrite the run's parts as one file of one row per image (after failed images were rerun)."""
    table = read_results(store, dataset, run_id).drop_columns("dataset")
    partition = f"{results_dir(dataset, run_id)}/dataset={dataset}"
    old = [
        info.path
        for info in store.fs.get_file_info(pafs.FileSelector(store.path(partition)))
        if info.path.endswith(".parquet")
    ]
    store.write_bytes(
        f"{partition}/part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet", parquet_bytes(table.cast(SCHEMA))
    )
    for path in old:
        store.fs.delete_file(path)
