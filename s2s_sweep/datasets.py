"""Datasets as lazy sequences of (image_id, noisy, clean_or_None), images (H, W, C) float32 in [0, 1].

Implemented so far: `demo`, built in. The benchmark sets (CBSD68, SIDD, PolyU, folders)
are the next step (issue 4).
"""

from collections.abc import Iterator

import numpy as np

# Colour photographs shipped with scikit-image, so the demo needs no download.
DEMO_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
DEMO_SIDE = 128
DEMO_SIGMA = 25.0
DEMO_SEED = 2023

Item = tuple[str, np.ndarray, np.ndarray | None]


def add_gaussian_noise(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """AWGN with std `sigma` on the 0..255 scale, clipped and quantised to 8 bits like CBSD68's PNGs."""
    rng = np.random.default_rng(seed)
    noisy = np.round(clean * 255.0 + rng.normal(0.0, sigma, clean.shape))
    return (np.clip(noisy, 0, 255) / 255.0).astype(np.float32)


def demo_items() -> Iterator[Item]:
    """Centre crops (128x128) of scikit-image's colour photographs with seeded σ = 25 noise."""
    from skimage import data

    for index, name in enumerate(DEMO_SOURCES):
        image = getattr(data, name)()
        top, left = (image.shape[0] - DEMO_SIDE) // 2, (image.shape[1] - DEMO_SIDE) // 2
        clean = image[top : top + DEMO_SIDE, left : left + DEMO_SIDE, :3].astype(np.float32) / 255.0
        yield name, add_gaussian_noise(clean, DEMO_SIGMA, DEMO_SEED + index), clean
