"""The SIDD submission file, from real runs on a local Ray, read back with SciPy block by block."""

import subprocess
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import scipy.io
from conftest import run_in_process, run_module, write_sidd_mat
from PIL import Image

from model.config import S2SConfig
from s2s_sweep.configs import ConfigError
from s2s_sweep.datasets import open_dataset, sidd_block_id
from s2s_sweep.export import complete_rows
from s2s_sweep.methods import Method
from s2s_sweep.results import ResultsTable, read_results
from s2s_sweep.runner import RunOptions, run_dataset
from s2s_sweep.store import OutputStore

FAST = S2SConfig(steps=3, passes=2, lambda_iqa=0.0)
SHAPE = (2, 3, 48, 48, 3)  # images x blocks of 48² (the official file: 40 x 32 of 256²)


@pytest.fixture(scope="module")
def sidd_runs(tmp_path_factory, local_ray):
    """A data root with both SIDD .mat files, and an output store holding a complete benchmark run
    ("bench"), a complete validation run ("val"), a demo run and a benchmark run of the first 4 blocks ("part")."""
    root = tmp_path_factory.mktemp("data")
    write_sidd_mat(root / "SIDD", "BenchmarkNoisyBlocksSrgb", None, shape=SHAPE)
    write_sidd_mat(root / "SIDD", shape=SHAPE)
    out = tmp_path_factory.mktemp("out")
    benchmark = open_dataset("sidd-benchmark", data_root=root)
    for dataset, run_id in ((benchmark, "bench"), (benchmark.select(limit=4), "part")):
        run_dataset(dataset, Method(config=FAST), RunOptions(out=str(out), run_id=run_id, flush_seconds=0))
    run_dataset(open_dataset("sidd", data_root=root), Method("wavelet", FAST), RunOptions(out=str(out), run_id="val"))
    run_dataset(
        open_dataset("demo").select(limit=1), Method("wavelet", FAST), RunOptions(out=str(out), run_id="demo-run")
    )
    return root, out


def export(root, out, run_id, to, *more) -> subprocess.CompletedProcess:
    return run_in_process(
        "s2s_sweep.export", run_id, "--out", str(out), "--data-root", str(root), "--to", str(to), *more
    )


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["cell", "array"])
def test_every_block_of_the_submission_is_the_runs_png_in_the_input_order(sidd_runs, tmp_path, layout):
    root, out = sidd_runs
    to = tmp_path / "SubmitSrgb.mat"
    done = (run_module if layout == "cell" else run_in_process)(
        "s2s_sweep.export",
        "bench",
        "--out",
        str(out),
        "--data-root",
        str(root),
        "--to",
        str(to),
        "--layout",
        layout,
        "--authors",
        "A. Researcher",
    )
    assert done.returncode == 0, done.stderr
    assert "2 x 3 blocks" in done.stdout
    mat = scipy.io.loadmat(tmp_path / "SubmitSrgb.mat")
    blocks = mat["DenoisedBlocksSrgb"]
    assert blocks.dtype == (object if layout == "cell" else np.uint8)
    assert blocks.shape[:2] == SHAPE[:2]
    rows = read_results(OutputStore(str(out)), "sidd-benchmark", "bench").to_pandas().set_index("image_id")
    for i in range(SHAPE[0]):
        for b in range(SHAPE[1]):
            png = np.asarray(Image.open(out / "sidd-benchmark" / "bench" / rows.loc[f"i{i:02d}_b{b:02d}", "output"]))
            assert blocks[i, b].dtype == np.uint8 and blocks[i, b].shape == SHAPE[2:]
            np.testing.assert_array_equal(blocks[i, b], png)
    seconds = (rows["train_seconds"] + rows["inference_seconds"]).sum()
    expected = seconds * 1024 * 1024 / (np.prod(SHAPE[:4]))
    assert mat["TimeMPSrgb"].item() == pytest.approx(expected)
    optional = mat["OptionalData"][0, 0]
    assert optional["MethodName"].item() == "S2S+"
    assert optional["Authors"].item() == "A. Researcher"
    assert optional["RunId"].item() == "bench"
    assert "steps: 3" in optional["Settings"].item()
    assert optional["CodeVersion"].item() == rows["code_version"].iloc[0]


@pytest.mark.slow
def test_a_validation_run_exports_in_the_same_layout(sidd_runs, tmp_path):
    root, out = sidd_runs
    done = export(root, out, "val", tmp_path / "val.mat")
    assert done.returncode == 0, done.stderr
    mat = scipy.io.loadmat(tmp_path / "val.mat")
    assert mat["DenoisedBlocksSrgb"].shape == SHAPE[:2]
    assert mat["OptionalData"][0, 0]["MethodName"].item() == "wavelet"


def one_line(done) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr
    return lines[-1]


def test_the_blocks_are_taken_in_the_input_order_and_a_gap_is_named():
    ids = [sidd_block_id(i, b) for i in range(2) for b in range(3)]
    rows = pd.DataFrame({"image_id": ids[::-1], "status": "ok", "output": [f"images/{i}.png" for i in ids[::-1]]})
    assert complete_rows(rows, 2, 3, "r").index.tolist() == ids
    with pytest.raises(ConfigError, match=r"run r: 1 of the 6 blocks .* \(i01_b02\); finish it with --resume r"):
        complete_rows(rows[rows.image_id != "i01_b02"], 2, 3, "r")
    with pytest.raises(
        ConfigError, match=r"run r: 1 blocks failed \(i00_b01\); rerun them with --resume r --retry-failed"
    ):
        complete_rows(rows.assign(status=["ok", "ok", "ok", "ok", "failed", "ok"]), 2, 3, "r")


@pytest.mark.slow
def test_a_run_with_blocks_missing_or_failed_is_refused_in_one_line(sidd_runs, tmp_path):
    root, out = sidd_runs
    assert "2 of the 6 blocks of the input are not in the run (i01_b01, i01_b02); finish it with --resume part" in (
        one_line(export(root, out, "part", tmp_path / "x.mat"))
    )
    # a block recorded as failed later (as a resumed session records it) supersedes its ok row
    store = OutputStore(str(out))
    row = read_results(store, "sidd-benchmark", "bench").to_pylist()[0]
    table = ResultsTable(store, "sidd-benchmark", "failed-copy", flush_seconds=0)
    for source in read_results(store, "sidd-benchmark", "bench").drop_columns("dataset").to_pylist():
        table.add(source)
    table.add({**row, "status": "failed", "error": "worker died", "finished_at": datetime.now(timezone.utc)})
    store.write_bytes("sidd-benchmark/failed-copy/run.json", b'{"dataset": "sidd-benchmark", "run_id": "failed-copy"}')
    line = one_line(export(root, out, "failed-copy", tmp_path / "x.mat"))
    assert f"1 blocks failed ({row['image_id']}); rerun them with --resume failed-copy --retry-failed" in line
    assert not (tmp_path / "x.mat").exists()


@pytest.mark.slow
def test_unknown_runs_other_datasets_and_png_layouts_are_refused(sidd_runs, tmp_path):
    root, out = sidd_runs
    assert "nope: no run of that id in" in one_line(export(root, out, "nope", tmp_path / "x.mat"))
    (tmp_path / "empty").mkdir()
    line = one_line(export(tmp_path / "empty", out, "bench", tmp_path / "x.mat"))
    assert "BenchmarkNoisyBlocksSrgb.mat: not found; the export takes the grid and order" in line
    line = one_line(export(root, out, "bench", tmp_path / "no" / "such" / "dir.mat"))
    assert "--to" in line and "cannot write" in line
    assert "run demo-run is of demo; the SIDD submission needs a run of sidd or sidd-benchmark" in one_line(
        export(root, out, "demo-run", tmp_path / "x.mat")
    )
