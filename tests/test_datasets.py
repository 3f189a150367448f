from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import write_sidd_mat
from PIL import Image

from s2s_sweep.datasets import DEMO_SIGMA, DatasetError, open_dataset
from s2s_sweep.images import to_uint8
from s2s_sweep.metrics import calculate_psnr

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
RNG = np.random.default_rng(0)


def save(path: Path, pixels: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)


def random_rgb(height=40, width=48):
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_demo_is_built_in_sorted_and_reproducible():
    demo = open_dataset("demo")
    assert demo.ids == tuple(sorted(demo.ids)) and len(demo) == 4 and demo.has_clean
    image_id, noisy, clean = next(iter(demo))
    assert noisy.shape == clean.shape == (64, 64, 3)
    assert np.array_equal(noisy, demo.load(image_id)[0])
    unclipped = (clean > 0.3) & (clean < 0.7)
    assert abs((noisy - clean)[unclipped].std() * 255 - DEMO_SIGMA) < 1.0


def test_cbsd68_layout_pairs_noisy_with_original(tmp_path):
    for name in ("0001", "0000"):
        clean = random_rgb()
        save(tmp_path / "CBSD68" / "original_png" / f"{name}.png", clean)
        save(tmp_path / "CBSD68" / "noisy25" / f"{name}.png", clean)
    dataset = open_dataset("cbsd68-25", data_root=tmp_path)
    assert dataset.ids == ("0000", "0001")
    image_id, noisy, clean = next(iter(dataset))
    assert image_id == "0000" and np.array_equal(noisy, clean)
    with pytest.raises(
        DatasetError, match=r"cbsd68-50: folder .*noisy50 not found .*python -m s2s_sweep.data fetch cbsd68-50"
    ):
        open_dataset("cbsd68-50", data_root=tmp_path)


def test_data_root_from_the_environment(tmp_path, monkeypatch):
    save(tmp_path / "PolyU" / "CroppedImages" / "cam_a_real.JPG", random_rgb(), format="JPEG")
    save(tmp_path / "PolyU" / "CroppedImages" / "cam_a_mean.JPG", random_rgb(), format="JPEG")
    monkeypatch.setenv("S2S_DATA_ROOT", str(tmp_path))
    dataset = open_dataset("polyu")
    assert dataset.ids == ("cam_a",)
    noisy, clean = dataset.load("cam_a")
    assert noisy.shape == clean.shape == (40, 48, 3)


def test_polyu_unpaired_files_are_named(tmp_path):
    save(tmp_path / "PolyU" / "CroppedImages" / "x_real.JPG", random_rgb(), format="JPEG")
    with pytest.raises(DatasetError, match=r"polyu: 1 unpaired images, e\.g\. .*x_real\.JPG"):
        open_dataset("polyu", data_root=tmp_path)


def test_folder_with_and_without_clean_references(tmp_path):
    for name in ("b", "a"):
        save(tmp_path / "noisy" / f"{name}.png", random_rgb())
        save(tmp_path / "clean" / f"{name}.png", random_rgb())
    (tmp_path / "noisy" / "notes.txt").write_text("not an image")
    paired = open_dataset(f"folder:{tmp_path / 'noisy'}", clean_dir=tmp_path / "clean")
    assert paired.ids == ("a", "b") and paired.has_clean
    unpaired = open_dataset(f"folder:{tmp_path / 'noisy'}")
    assert not unpaired.has_clean and unpaired.load("a")[1] is None
    assert unpaired.key.startswith("folder-noisy-") and "/" not in unpaired.key  # safe in output paths
    assert open_dataset("demo").key == "demo"


def test_folder_errors_name_the_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no images .* in .*empty"):
        open_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(DatasetError, match="is not a folder"):
        open_dataset(f"folder:{tmp_path / 'nowhere'}")
    save(tmp_path / "n" / "a.png", random_rgb(40, 48))
    save(tmp_path / "c" / "a.png", random_rgb(40, 40))
    dataset = open_dataset(f"folder:{tmp_path / 'n'}", clean_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match=r"/a: noisy \(40, 48, 3\) and clean \(40, 40, 3\) differ in size"):
        dataset.load("a")
    (tmp_path / "n" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"a\.png: cannot decode"):
        dataset.load("a")


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(
        DatasetError,
        match=r"unknown dataset 'cbsd68-30'; known: cbsd68-15, cbsd68-25, cbsd68-50, sidd, sidd-benchmark, polyu, "
        r"demo, folder:PATH",
    ):
        open_dataset("cbsd68-30")


def test_select_by_limit_and_ids():
    demo = open_dataset("demo")
    assert demo.select(limit=2).ids == demo.ids[:2]
    assert demo.select(images=["coffee", "chelsea"]).ids == ("chelsea", "coffee")
    assert demo.select(images=["coffee", "chelsea"], limit=1).ids == ("chelsea",)
    with pytest.raises(DatasetError, match="unknown image ids lena"):
        demo.select(images=["lena"])
    with pytest.raises(DatasetError, match="limit: expected an integer >= 1"):
        demo.select(limit=0)


def test_sidd_official_mat_layout_one_item_per_block(tmp_path):
    noisy, clean = write_sidd_mat(tmp_path / "SIDD")
    dataset = open_dataset("sidd", data_root=tmp_path)
    assert dataset.ids == ("i00_b00", "i00_b01", "i00_b02", "i01_b00", "i01_b01", "i01_b02")
    got_noisy, got_clean = dataset.load("i01_b02")
    assert np.array_equal(to_uint8(got_noisy), noisy[1, 2]) and np.array_equal(to_uint8(got_clean), clean[1, 2])


def test_sidd_benchmark_has_no_references(tmp_path):
    noisy, _ = write_sidd_mat(tmp_path / "SIDD", "BenchmarkNoisyBlocksSrgb", None)
    dataset = open_dataset("sidd-benchmark", data_root=tmp_path)
    assert not dataset.has_clean and len(dataset) == 6
    got_noisy, got_clean = dataset.load("i00_b01")
    assert got_clean is None and np.array_equal(to_uint8(got_noisy), noisy[0, 1])


def test_sidd_mat_errors(tmp_path):
    with pytest.raises(
        DatasetError, match=r"ValidationNoisyBlocksSrgb\.mat not found; SIDD is distributed only from its own site"
    ):
        open_dataset("sidd", data_root=tmp_path)
    folder = tmp_path / "SIDD"
    write_sidd_mat(folder, gt_key=None)
    scipy.io.savemat(folder / "ValidationGtBlocksSrgb.mat", {"wrong": np.zeros((2, 3, 64, 64, 3), np.uint8)})
    with pytest.raises(DatasetError, match=r"ValidationGtBlocksSrgb\.mat: no array named 'ValidationGtBlocksSrgb'"):
        open_dataset("sidd", data_root=tmp_path)
    scipy.io.savemat(
        folder / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": np.zeros((2, 3, 64, 64, 3), np.float64)}
    )
    with pytest.raises(DatasetError, match=r"is float64 \(2, 3, 64, 64, 3\); expected uint8"):
        open_dataset("sidd", data_root=tmp_path)
    scipy.io.savemat(
        folder / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": np.zeros((2, 2, 64, 64, 3), np.uint8)}
    )
    with pytest.raises(DatasetError, match="has shape"):
        open_dataset("sidd", data_root=tmp_path)
    (folder / "ValidationGtBlocksSrgb.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetError, match="cannot read as a MATLAB file"):
        open_dataset("sidd", data_root=tmp_path)


def test_sidd_png_folder_layout(tmp_path):
    for name in ("0000_00", "0000_01"):
        save(tmp_path / "SIDD" / "noisy" / f"{name}.png", random_rgb(64, 64))
        save(tmp_path / "SIDD" / "clean" / f"{name}.png", random_rgb(64, 64))
    dataset = open_dataset("sidd", data_root=tmp_path)
    assert dataset.ids == ("0000_00", "0000_01") and dataset.has_clean


@needs_shared
def test_real_cbsd68_and_polyu():
    for sigma in (15, 25, 50):
        dataset = open_dataset(f"cbsd68-{sigma}", data_root=SHARED)
        assert len(dataset) == 68 and dataset.ids[0] == "0000" and dataset.ids[-1] == "0067"
    image_id, noisy, clean = next(iter(open_dataset("cbsd68-25", data_root=SHARED)))
    assert noisy.shape == (321, 481, 3)
    assert calculate_psnr(noisy, clean) == pytest.approx(20.2296, abs=1e-3)
    polyu = open_dataset("polyu", data_root=SHARED)
    assert len(polyu) == 100
    noisy, clean = polyu.load(polyu.ids[0])
    assert noisy.shape == clean.shape == (512, 512, 3)
    assert calculate_psnr(noisy, clean) == pytest.approx(41.0040, abs=1e-3)
