"""Ray's memory monitor on a real local Ray: an image whose task it kills is retried a bounded
number of times, then recorded as a failed row that says why, while the rest finishes."""

import numpy as np
import psutil
import pytest
import ray
from PIL import Image

from model.config import S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.methods import Method
from s2s_sweep.runner import RunOptions, run_dataset
from s2s_sweep.session import OOM_RETRIES, connect_ray


@pytest.mark.slow
def test_a_task_killed_for_memory_is_retried_a_bounded_number_of_times_then_fails_its_row(tmp_path, monkeypatch):
    memory = psutil.virtual_memory()
    threshold = (memory.total - memory.available + 1.5 * 2**30) / memory.total  # 1.5 GB above what is used now
    monkeypatch.setenv("RAY_memory_usage_threshold", f"{threshold:.3f}")  # read by the raylet Ray starts
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "100")
    monkeypatch.delenv("RAY_task_oom_retries", raising=False)  # connect_ray sets it; monkeypatch removes it after
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(folder / "big.png")  # ~3 GB in training
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "small.png")
    connect_ray(None)  # the product's own start of a local Ray, with its bounded OOM retries
    try:
        config = S2SConfig(steps=20, passes=1, lambda_iqa=0.0)
        outcome = run_dataset(
            open_dataset(f"folder:{folder}"),
            Method(config=config),
            RunOptions(out=str(tmp_path / "out"), cpus_per_image=2, flush_seconds=0),
        )
    finally:
        ray.shutdown()
    rows = {row["image_id"]: row for row in outcome.table.to_pylist()}
    assert rows["big"]["status"] == "failed", rows["big"]
    assert f"out of memory: Ray's memory monitor killed its task {OOM_RETRIES + 1} times" in rows["big"]["error"]
    assert rows["small"]["status"] == "ok"
