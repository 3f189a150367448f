"""Datasets by name: an ordered list of image ids and a loader of (noisy, clean_or_None).

    dataset = open_dataset("cbsd68-25", data_root="../shared/data")
    for image_id, noisy, clean in dataset.select(limit=4):   # lazy: one image in memory at a time
        ...

Images are (H, W, C) float32 in [0, 1]; ids are stable and sorted. Names:

| name | files under the data root |
| --- | --- |
| cbsd68-15/25/50 | CBSD68/noisy{σ}/NNNN.png, clean CBSD68/original_png/NNNN.png (clausmichele/CBSD68-dataset) |
| sidd | SIDD/ValidationNoisyBlocksSrgb.mat + ValidationGtBlocksSrgb.mat, one item per block, id |
|  | i{image}_b{block}; or SIDD/noisy/*.png + SIDD/clean/*.png paired by name |
| sidd-benchmark | SIDD/BenchmarkNoisyBlocksSrgb.mat, no references |
| polyu | PolyU/CroppedImages/X_real.JPG, clean X_mean.JPG, id X |
| folder:PATH | every image in PATH; clean references by name from `clean_dir`, or none |
| demo | built in: 64x64 crops of four scikit-image colour images with seeded σ = 25 noise |

The data root is the `data_root` argument, else $S2S_DATA_ROOT, else ~/.cache/s2s-sweep/data.
No resizing: sides that are not multiples of 32 are padded by the model.
"""

import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from model.errors import UserError
from s2s_sweep.images import read_image, read_image_size

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
CBSD68_SIGMAS = (15, 25, 50)
SIDD_MAT = {
    "sidd": ("ValidationNoisyBlocksSrgb", "ValidationGtBlocksSrgb"),
    "sidd-benchmark": ("BenchmarkNoisyBlocksSrgb", None),
}
NAMES = (*(f"cbsd68-{s}" for s in CBSD68_SIGMAS), *SIDD_MAT, "polyu", "demo", "folder:PATH")

# Colour images shipped with scikit-image, so the demo needs no download: four 64² crops, two even
# rounds of two images on a 2-core laptop, so the demo run ends within 3 minutes (README, Quick start).
DEMO_SOURCES = ("astronaut", "chelsea", "coffee", "immunohistochemistry")
DEMO_SIDE = 64
DEMO_SIGMA = 25.0
DEMO_SEED = 2023

Pair = tuple[np.ndarray, np.ndarray | None]


class DatasetError(UserError, ValueError):
    """A dataset that cannot be opened or an item that cannot be loaded; the message names the file."""


@dataclass(frozen=True)
class Dataset:
    name: str
    ids: tuple[str, ...]
    loader: Callable[[str], Pair]
    has_clean: bool
    sizer: Callable[[str], tuple[int, int]]  # (height, width) without decoding the pixels
    sigma: float | None = None  # σ of its noise (0..255) where it is known: synthetic Gaussian noise

    @property
    def key(self) -> str:
        """The name as used in output paths and MLflow experiment names: `folder:PATH` becomes
        folder-<basename>-<hash of the absolute path>, which holds no slashes."""
        if not self.name.startswith("folder:"):
            return self.name
        path = Path(self.name.removeprefix("folder:")).resolve()
        return f"folder-{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:6]}"

    def size(self, image_id: str) -> tuple[int, int]:
        """(height, width) from the file header, for planning memory and order; (0, 0) when unreadable
        (its load then fails with the reason)."""
        return self.sizer(image_id)

    def load(self, image_id: str) -> Pair:
        """(noisy, clean_or_None) of one image; errors name the file and the problem."""
        noisy, clean = self.loader(image_id)
        if clean is not None and clean.shape != noisy.shape:
            raise DatasetError(f"{self.name}/{image_id}: noisy {noisy.shape} and clean {clean.shape} differ in size")
        return noisy, clean

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for image_id in self.ids:
            yield (image_id, *self.load(image_id))

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, limit: int | None = None, images: list[str] | None = None) -> "Dataset":
        """The named images (in dataset order), then the first `limit` of them."""
        ids = self.ids
        if images:
            unknown = sorted(set(images) - set(ids))
            if unknown:
                raise DatasetError(f"{self.name}: unknown image ids {', '.join(unknown[:5])} (ids look like {ids[0]})")
            ids = tuple(i for i in ids if i in set(images))
        if limit is not None:
            if limit < 1:
                raise DatasetError(f"limit: expected an integer >= 1, got {limit}")
            ids = ids[:limit]
        return replace(self, ids=ids)


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    return Path(data_root or os.environ.get("S2S_DATA_ROOT") or Path.home() / ".cache" / "s2s-sweep" / "data")


def open_dataset(name: str, data_root: str | Path | None = None, clean_dir: str | Path | None = None) -> Dataset:
    """The dataset called `name` (see the module docstring); raises DatasetError naming what is wrong."""
    if name == "demo":
        return demo_dataset()
    if name.startswith("folder:"):
        return folder_dataset(name, Path(name.removeprefix("folder:")), Path(clean_dir) if clean_dir else None)
    root = resolve_data_root(data_root)
    if name.startswith("cbsd68-") and name.removeprefix("cbsd68-") in map(str, CBSD68_SIGMAS):
        base = require_dir(root / "CBSD68", name, root)
        sigma = name.removeprefix("cbsd68-")
        dataset = folder_dataset(
            name, require_dir(base / f"noisy{sigma}", name, root), require_dir(base / "original_png", name, root)
        )
        return replace(dataset, sigma=float(sigma))
    if name == "polyu":
        folder = require_dir(root / "PolyU" / "CroppedImages", name, root)
        return folder_dataset(name, folder, folder, noisy_suffix="_real", clean_suffix="_mean")
    if name in SIDD_MAT:
        return sidd_dataset(name, root / "SIDD")
    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(NAMES)}")


def require_dir(path: Path, name: str, root: Path) -> Path:
    if not path.is_dir():
        raise DatasetError(
            f"{name}: folder {path} not found under data root {root}; pass --data-root or set S2S_DATA_ROOT, "
            f"or get the files with: python -m s2s_sweep.data fetch {name}"
        )
    return path


def image_files(folder: Path, suffix: str = "") -> dict[str, Path]:
    """{id: path} of the image files in `folder` whose stem ends with `suffix` (removed from the id)."""
    return {
        path.stem.removesuffix(suffix): path
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.endswith(suffix)
    }


def folder_dataset(
    name: str, noisy_dir: Path, clean_dir: Path | None, noisy_suffix: str = "", clean_suffix: str = ""
) -> Dataset:
    """Images in `noisy_dir`, paired by id with those in `clean_dir` (when given)."""
    for folder in (noisy_dir, clean_dir):
        if folder is not None and not folder.is_dir():
            raise DatasetError(f"{name}: {folder} is not a folder")
    noisy = image_files(noisy_dir, noisy_suffix)
    if not noisy:
        raise DatasetError(f"{name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {noisy_dir}")
    clean = image_files(clean_dir, clean_suffix) if clean_dir else {}
    if clean_dir:
        unpaired = sorted(set(noisy) ^ set(clean))
        if unpaired:
            where = [str(noisy.get(i) or clean[i]) for i in unpaired[:3]]
            raise DatasetError(
                f"{name}: {len(unpaired)} unpaired images, e.g. {', '.join(where)} (noisy and clean are matched by "
                "name)"
            )

    def load(image_id: str) -> Pair:
        return read_image(noisy[image_id]), read_image(clean[image_id]) if clean_dir else None

    return Dataset(
        name,
        tuple(noisy),
        load,
        has_clean=clean_dir is not None,
        sizer=lambda image_id: read_image_size(noisy[image_id]),
    )


def sidd_dataset(name: str, folder: Path) -> Dataset:
    """SIDD blocks from the official .mat files, or from PNG pairs in SIDD/noisy and SIDD/clean."""
    noisy_key, clean_key = SIDD_MAT[name]
    noisy_mat = folder / f"{noisy_key}.mat"
    if not noisy_mat.is_file() and name == "sidd" and (folder / "noisy").is_dir():
        return folder_dataset(name, folder / "noisy", folder / "clean")
    if not noisy_mat.is_file():
        raise DatasetError(
            f"{name}: {noisy_mat} not found; SIDD is distributed only from its own site: download "
            f"{noisy_key}.mat{' and ' + clean_key + '.mat' if clean_key else ''} there and put them in {folder} "
            f"(or PNG pairs in {folder}/noisy and {folder}/clean)"
        )
    noisy_blocks = functools.cache(lambda: read_sidd_mat(noisy_mat, noisy_key))
    clean_blocks = functools.cache(lambda: read_sidd_mat(folder / f"{clean_key}.mat", clean_key)) if clean_key else None
    images, blocks = noisy_blocks().shape[:2]
    if clean_blocks and clean_blocks().shape != noisy_blocks().shape:
        raise DatasetError(
            f"{name}: {clean_key}.mat has shape {clean_blocks().shape}, {noisy_key}.mat {noisy_blocks().shape}"
        )
    ids = tuple(sidd_block_id(i, b) for i in range(images) for b in range(blocks))

    def load(image_id: str) -> Pair:
        i, b = (int(part[1:]) for part in image_id.split("_"))
        noisy = noisy_blocks()[i, b].astype(np.float32) / 255.0
        return noisy, clean_blocks()[i, b].astype(np.float32) / 255.0 if clean_blocks else None

    return Dataset(name, ids, load, has_clean=clean_key is not None, sizer=lambda image_id: noisy_blocks().shape[2:4])


def sidd_block_id(image: int, block: int) -> str:
    """The id of block `block` of image `image` of a SIDD .mat, in the images x blocks order."""
    return f"i{image:02d}_b{block:02d}"


def read_sidd_mat(path: Path, key: str) -> np.ndarray:
    """The uint8 array (images, blocks, H, W, 3) stored under `key` in a SIDD .mat file."""
    import scipy.io

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        content = scipy.io.loadmat(str(path), variable_names=[key])
    except Exception as error:  # scipy raises many types on a damaged file
        raise DatasetError(f"{path}: cannot read as a MATLAB file ({type(error).__name__}: {error})") from None
    if key not in content:
        raise DatasetError(f"{path}: no array named {key!r} in the file")
    blocks = content[key]
    if blocks.dtype != np.uint8 or blocks.ndim != 5 or blocks.shape[-1] != 3:
        raise DatasetError(f"{path}: {key} is {blocks.dtype} {blocks.shape}; expected uint8 (images, blocks, H, W, 3)")
    return blocks


def add_gaussian_noise(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """AWGN with std `sigma` on the 0..255 scale, clipped and quantised to 8 bits like CBSD68's PNGs."""
    rng = np.random.default_rng(seed)
    noisy = np.round(clean * 255.0 + rng.normal(0.0, sigma, clean.shape))
    return (np.clip(noisy, 0, 255) / 255.0).astype(np.float32)


def demo_dataset() -> Dataset:
    """Centre crops (64x64) of scikit-image's colour images with seeded σ = 25 noise."""

    def load(image_id: str) -> Pair:
        from skimage import data

        image = getattr(data, image_id)()
        top, left = (image.shape[0] - DEMO_SIDE) // 2, (image.shape[1] - DEMO_SIDE) // 2
        clean = image[top : top + DEMO_SIDE, left : left + DEMO_SIDE, :3].astype(np.float32) / 255.0
        return add_gaussian_noise(clean, DEMO_SIGMA, DEMO_SEED + DEMO_SOURCES.index(image_id)), clean

    return Dataset(
        "demo", DEMO_SOURCES, load, has_clean=True, sizer=lambda image_id: (DEMO_SIDE, DEMO_SIDE), sigma=DEMO_SIGMA
    )
