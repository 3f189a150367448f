"""The sweep's Parquet tables: one row per trial, and one per (trial, image, metric, step checkpoint) for the curves."""

import json

import pyarrow as pa

from s2s_sweep.objectives import SCORE
from s2s_sweep.sweep.space import trial_lambda


def sweep_tables(
    results, sweep_id: str, subset_size: int, checkpoints: list[int], default_init: str, objective: str
) -> tuple[pa.Table, pa.Table]:
    """One row per trial (its `objective` and `score`; mean PSNR and SSIM at the same checkpoint
    where the dataset has clean images), and one row per (trial, image, metric, step checkpoint)
    for the curves of every objective; the dataset is the tables' hive partition."""
    trial_rows, curve_rows = [], []
    for result in results:
        config, history = result.config, result.metrics_dataframe
        reports = [] if history is None else history.to_dict("records")
        last = reports[-1] if reports else {}
        images_done = int(last.get("images_done", 0))
        trial_id = result.path.rstrip("/").rsplit("/", 1)[-1]
        parts = trial_id.split("_")  # Tune names a trial's folder <trainable>_<id>_<creation index>_<params>_<date>
        number = int(parts[parts.index(last["trial_id"]) + 1]) if last.get("trial_id") in parts else None
        trial_rows.append(
            {
                "sweep_id": sweep_id,
                "trial_id": trial_id,
                "trial_number": number,
                "init": config.get("init", default_init),
                "p": config["p"],
                "lambda_iqa": trial_lambda(config),
                "steps": last.get("best_steps"),
                "images_done": images_done,
                "objective": objective,
                SCORE: last.get(SCORE),
                "mean_psnr": last.get("mean_psnr"),
                "mean_ssim": last.get("mean_ssim"),
                "status": "error" if result.error else "ok",
                "error": str(result.error).splitlines()[-1][:500] if result.error else None,
                "early_stopped": result.error is None and images_done < subset_size,
                "seconds": float(last.get("time_total_s", 0.0)),
            }
        )
        for report in reports:
            for name, values in json.loads(report["curves"]).items():
                for step, value in zip(checkpoints, values, strict=True):
                    curve_rows.append(
                        {
                            "sweep_id": sweep_id,
                            "trial_id": trial_id,
                            "image_id": report["image_id"],
                            "metric": name,
                            "steps": step,
                            "value": value,
                        }
                    )
    return pa.Table.from_pylist(trial_rows), pa.Table.from_pylist(curve_rows, schema=CURVE_SCHEMA)


CURVE_SCHEMA = pa.schema(
    [
        ("sweep_id", pa.string()),
        ("trial_id", pa.string()),
        ("image_id", pa.string()),
        ("metric", pa.string()),
        ("steps", pa.int64()),
        ("value", pa.float64()),
    ]
)
