"""The tabular landscape (benchmarks/bench_landscape.py) and a trial that looks its curves up instead of training."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from s2s_sweep.configs import ConfigError
from s2s_sweep.objectives import CURVES

# The tabular landscape (benchmarks/bench_landscape.py): one row per (image, p, step checkpoint).
LANDSCAPE = pa.schema(
    [
        ("dataset", pa.string()),
        ("image_id", pa.string()),
        ("p", pa.float64()),
        ("steps", pa.int64()),
        ("psnr", pa.float64()),
        ("ssim", pa.float64()),
        ("heldout_psnr", pa.float64()),
        ("noisy_psnr", pa.float64()),
        ("side", pa.int64()),
        ("passes", pa.int64()),
        ("precision", pa.string()),
        ("device", pa.string()),
        ("seed", pa.int64()),
        ("seconds", pa.float64()),
    ]
)


def read_landscape(folder: str) -> pa.Table:
    """Every kind's landscape table under `folder` (one Parquet file per kind)."""
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise ConfigError(
            f"{folder}: no landscape tables (*.parquet); build them with benchmarks/bench_landscape.py run"
        )
    return pa.concat_tables([pq.read_table(file, schema=LANDSCAPE) for file in files])


@dataclass
class ReplayLandscape:
    """What a trial evaluates in a replayed sweep: the curves a landscape table holds for its
    configuration, instead of training (only p is searched: the table has λ_IQA 0, cold starts)."""

    table: pa.Table  # LANDSCAPE rows of one dataset
    image_ids: list[str]
    checkpoints: list[int]

    def __post_init__(self):
        self.rows = {}
        for row in self.table.to_pylist():
            self.rows[(row["image_id"], round(row["p"], 6), row["steps"])] = row

    def curves(self, config: dict) -> Iterator[tuple[str, dict[str, list[float]]]]:
        p = round(config["p"], 6)
        for image_id in self.image_ids:
            try:
                rows = [self.rows[(image_id, p, steps)] for steps in self.checkpoints]
            except KeyError:
                raise ConfigError(
                    f"landscape: no curve for image {image_id} at p {p} and steps {self.checkpoints}; search the "
                    "table's p and steps"
                ) from None
            yield image_id, {name: [row[name] for row in rows] for name in CURVES if name in LANDSCAPE.names}
