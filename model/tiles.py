"""Images of any size: random training crops and overlapping inference tiles.

Training on crops: each step takes `batch` random crops of the (padded) image, every crop
with its own Bernoulli mask and dropout, and the masked L1 loss of all crops together, so
a step's memory depends on the crop, not on the image. The PaQ-2-PiQ loss scores the crops:
its RoI-pooling head takes any input size.

Tiled inference: the dropout ensemble runs tile by tile over overlapping tiles; each tile's
mean is weighted by a smooth window (1 inside, a raised-cosine ramp across the overlap with
a neighbour, 1 at the image border) and the weighted sum is normalised, so no seam shows.
With one tile covering the image the weights are all 1 and the output is the untiled one.
"""

import math

import numpy as np
import torch

from model.masking import CROP_STREAM
from model.memory import TILE_OVERLAP


class CropSampler:
    """Random crops (B, C, crop_h, crop_w) of a padded image (1, C, H', W'), seeded.

    A crop lies inside the real height x width image where the image is at least the crop;
    along a shorter side the crop is the whole padded side and only the first `valid`
    rows/columns (the real image, not its reflected padding) count in the loss.
    """

    def __init__(self, padded: torch.Tensor, height: int, width: int, crop: int, batch: int, seed: int):
        self.padded, self.batch = padded, batch
        self.crop_h, self.crop_w = min(crop, padded.shape[-2]), min(crop, padded.shape[-1])
        self.valid = (min(height, self.crop_h), min(width, self.crop_w))
        self.max_top, self.max_left = max(0, height - self.crop_h), max(0, width - self.crop_w)
        self.rng = np.random.default_rng([seed, CROP_STREAM])

    def sample(self) -> torch.Tensor:
        tops = self.rng.integers(0, self.max_top + 1, self.batch)
        lefts = self.rng.integers(0, self.max_left + 1, self.batch)
        return torch.cat(
            [self.padded[..., t : t + self.crop_h, s : s + self.crop_w] for t, s in zip(tops, lefts, strict=True)]
        )


def tile_starts(length: int, tile: int) -> list[int]:
    """Evenly spread starts of tiles of `tile` pixels covering `length`, overlapping by >= TILE_OVERLAP."""
    if length <= tile:
        return [0]
    count = math.ceil((length - TILE_OVERLAP) / (tile - TILE_OVERLAP))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def ramp(length: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D blending weights: sin^2 from ~0 to 1 over TILE_OVERLAP pixels at each side that
    overlaps a neighbour (`rise` at the start, `fall` at the end), 1 elsewhere; never 0."""
    weights = torch.ones(length)
    edge = torch.sin(0.5 * math.pi * (torch.arange(TILE_OVERLAP) + 0.5) / TILE_OVERLAP) ** 2
    if rise:
        weights[:TILE_OVERLAP] = edge
    if fall:
        weights[-TILE_OVERLAP:] = torch.minimum(weights[-TILE_OVERLAP:], edge.flip(0))
    return weights


def tiles(height: int, width: int, tile: int) -> list[tuple[slice, slice, torch.Tensor]]:
    """(rows, columns, weights (tile_h, tile_w)) of each tile of a padded height x width image;
    tile 0 means one tile of the whole image."""
    tile_h, tile_w = (min(tile, height), min(tile, width)) if tile else (height, width)
    tops, lefts = tile_starts(height, tile_h), tile_starts(width, tile_w)
    found = []
    for i, top in enumerate(tops):
        rows = ramp(tile_h, i > 0, i < len(tops) - 1)
        for j, left in enumerate(lefts):
            columns = ramp(tile_w, j > 0, j < len(lefts) - 1)
            found.append((slice(top, top + tile_h), slice(left, left + tile_w), rows[:, None] * columns[None, :]))
    return found
