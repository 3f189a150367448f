import shutil
from pathlib import Path

import pytest
from conftest import run_module

from s2s_sweep.data import dataset_files, fetch, verify

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


def test_checksums_cover_every_published_file():
    assert len(dataset_files("cbsd68-25")) == 68 * 2
    assert len(dataset_files("polyu")) == 200
    assert all(path.startswith("CBSD68/") for path in dataset_files("cbsd68-50"))


def test_fetch_rejects_files_whose_checksum_does_not_match(tmp_path):
    source = tmp_path / "mirror"
    for relative in dataset_files("cbsd68-15"):
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes(b"not the published file")
    problems = fetch("cbsd68-15", tmp_path / "root", source.as_uri(), retries=0)
    assert len(problems) == 136 and "SHA-256 mismatch, file not kept" in problems[0]
    assert not any((tmp_path / "root").rglob("*.png"))


def test_fetch_reports_an_unreachable_source_and_sidd_needs_a_manual_step(tmp_path):
    done = run_module(
        "s2s_sweep.data", "fetch", "polyu", "--data-root", str(tmp_path), "--source", (tmp_path / "none").as_uri()
    )
    assert done.returncode == 1 and "download failed" in done.stderr
    assert "error: polyu: 200 of 200 files are not good" in done.stderr
    done = run_module("s2s_sweep.data", "fetch", "sidd", "--data-root", str(tmp_path))
    assert done.returncode == 2 and "distributed only from its own site" in done.stderr


@needs_shared
def test_verify_the_shared_data_and_fetch_from_a_file_url_mirror(tmp_path):
    assert verify("cbsd68-25", SHARED) == [] and verify("polyu", SHARED) == []
    mirror = tmp_path / "mirror"
    for relative in dataset_files("cbsd68-50"):
        (mirror / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / relative, mirror / relative)
    root = tmp_path / "root"
    done = run_module("s2s_sweep.data", "fetch", "cbsd68-50", "--data-root", str(root), "--source", mirror.as_uri())
    assert done.returncode == 0, done.stderr
    assert "all 136 files present and verified" in done.stdout
    (root / "CBSD68" / "noisy50" / "0003.png").write_bytes(b"damaged")
    done = run_module("s2s_sweep.data", "verify", "cbsd68-50", "--data-root", str(root))
    assert done.returncode == 1 and "0003.png: SHA-256 mismatch" in done.stderr
