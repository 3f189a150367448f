"""The one memory model: how much memory one image's training and inference take, and the
plan (whole image or random crops, one tile or many) that fits a budget.

    plan = fit_memory(3072, 4096, S2SConfig(), budget_bytes=8 * 2**30)
    plan.crop, plan.batch, plan.tile, plan.peak_bytes      # 256, 4, 512, ~3.6 GB

Images up to WHOLE_IMAGE_PIXELS (512 x 512, the paper's largest) train on the whole image
and infer in one piece, exactly as the paper. Larger ones train on a batch of random crops
with as many pixels per step, and infer over overlapping tiles (model/tiles.py), so memory
no longer grows with the image beyond the copies of the image itself.

The constants are peak RSS measured on CPU (`benchmarks/bench_large.py` re-measures them):
activations grow with the pixels of one training batch or inference batch; the rest is the
process (Python, torch) and the few copies of the image a run holds. On CUDA the same
activation figures are used for the GPU (not yet measured there: no GPU was lent).
"""

import resource
from dataclasses import dataclass
from pathlib import Path

from model.config import S2SConfig
from model.errors import ImageUnusable
from model.sizes import padded_size

WHOLE_IMAGE_PIXELS = 512 * 512
DEFAULT_CROP = 256
DEFAULT_TILE = 512
TILE_OVERLAP = 64
MB = 2**20

# Activation bytes per pixel of one training step's batch, and of one inference pass (CPU RSS).
TRAIN_BYTES_PER_PIXEL = {"fp32": 8600, "bf16": 6200}
PASS_BYTES_PER_PIXEL = {"fp32": 2200, "bf16": 2100}
TRAIN_WORKSPACE_BYTES = 350 * MB  # allocator and oneDNN workspace once a backward pass has run
PASS_WORKSPACE_BYTES = 130 * MB
PROCESS_BYTES = {"cpu": 600 * MB, "cuda": 2500 * MB}  # interpreter, torch, libraries (and the CUDA context)
# Copies of the image a run holds at once, per image pixel: the decoded float array, the padded
# tensor, the weighted sums (estimate and held-out) and weights of the tiles, the output array and its 8-bit PNG.
IMAGE_BYTES_PER_PIXEL = 80
IQA_BYTES = 400 * MB  # PaQ-2-PiQ (ResNet-18) weights and workspace, when λ_IQA > 0
IQA_BYTES_PER_PIXEL = 600


class DoesNotFit(ImageUnusable, ValueError):
    """Even the smallest plan (one 64 x 64 crop, 192 x 192 tiles) exceeds the memory budget."""


@dataclass(frozen=True)
class Plan:
    crop: int  # side of the training crops; 0 = the whole padded image (the paper)
    batch: int  # crops per training step (1 for the whole image)
    tile: int  # side of the inference tiles; 0 = the whole padded image in one piece
    train_bytes: int  # predicted peak while training: RSS on CPU, GPU memory on CUDA
    infer_bytes: int  # predicted peak while inferring
    host_bytes: int  # predicted peak RAM of the process (= the larger peak on CPU)

    @property
    def peak_bytes(self) -> int:
        return max(self.train_bytes, self.infer_bytes)


def piece_pixels(height: int, width: int, side: int) -> int:
    """Pixels of one square crop or tile of `side` clipped to the padded image; side 0 = the whole padded image."""
    padded_h, padded_w = padded_size(height, width)
    return padded_h * padded_w if not side else min(side, padded_h) * min(side, padded_w)


def estimate(
    height: int, width: int, config: S2SConfig, crop: int, batch: int, tile: int, device_type: str = "cpu"
) -> Plan:
    """Predicted peaks of one image with the given crop/batch/tile (see the module docstring)."""
    precision = config.precision_on(device_type)
    image_bytes = IMAGE_BYTES_PER_PIXEL * height * width
    train_pixels = batch * piece_pixels(height, width, crop)  # batch is 1 for the whole image
    train = TRAIN_WORKSPACE_BYTES + TRAIN_BYTES_PER_PIXEL[precision] * train_pixels
    if config.lambda_iqa > 0:
        train += IQA_BYTES + IQA_BYTES_PER_PIXEL * train_pixels
    tile_pixels = piece_pixels(height, width, tile)
    infer = PASS_WORKSPACE_BYTES + PASS_BYTES_PER_PIXEL[precision] * tile_pixels * passes_per_batch(
        config, tile_pixels, device_type
    )
    base = PROCESS_BYTES[device_type]
    if device_type == "cpu":
        train, infer = base + image_bytes + train, base + image_bytes + infer
        return Plan(crop, batch, tile, train, infer, max(train, infer))
    return Plan(crop, batch, tile, train + image_bytes, infer + image_bytes, base + image_bytes)


def passes_per_batch(config: S2SConfig, pixels: int, device_type: str, free_bytes: int = 0) -> int:
    """How many inference passes of `pixels` pixels run at once: those that fit the activation
    budget (`inference_memory_mb`, else half of `free_bytes` on CUDA); one at a time on CPU,
    where larger batches measured slower (their activations fall out of cache)."""
    budget = config.inference_memory_mb * MB or (free_bytes // 2 if device_type == "cuda" else 0)
    return max(1, min(config.passes, budget // (pixels * PASS_BYTES_PER_PIXEL[config.precision_on(device_type)])))


def default_plan(height: int, width: int, config: S2SConfig) -> tuple[int, int, int]:
    """(crop, batch, tile) before any budget: the paper's whole image up to WHOLE_IMAGE_PIXELS,
    crops and tiles above, or what the config asks for."""
    padded_h, padded_w = padded_size(height, width)
    large = padded_h * padded_w > WHOLE_IMAGE_PIXELS
    crop = config.crop_size or (DEFAULT_CROP if large else 0)
    if crop and padded_h <= crop and padded_w <= crop:
        crop = 0  # one crop would be the whole image
    batch = (config.crop_batch or max(1, WHOLE_IMAGE_PIXELS // crop**2)) if crop else 1
    tile = config.tile_size or (DEFAULT_TILE if large else 0)
    if tile and padded_h <= tile and padded_w <= tile:
        tile = 0
    return crop, batch, tile


def estimate_memory(height: int, width: int, config: S2SConfig, device_type: str = "cpu") -> Plan:
    """The plan the config implies for a height x width image, with its predicted peaks."""
    return estimate(height, width, config, *default_plan(height, width, config), device_type)


def fit_memory(
    height: int, width: int, config: S2SConfig, budget_bytes: int, device_type: str = "cpu", name: str = "image"
) -> Plan:
    """The default plan, shrunk until its peak fits `budget_bytes`: smaller inference tiles first
    (same result up to the blending), then fewer crops per step, then smaller crops.
    Raises DoesNotFit with a one-line reason when even the smallest plan does not fit."""
    crop, batch, tile = default_plan(height, width, config)
    padded_h, padded_w = padded_size(height, width)
    while True:
        plan = estimate(height, width, config, crop, batch, tile, device_type)
        if plan.peak_bytes <= budget_bytes:
            return plan
        if plan.infer_bytes > budget_bytes and (tile or max(padded_h, padded_w)) > 192:
            tile = max(192, (tile or max(padded_h, padded_w)) // 2 // 32 * 32)
        elif plan.train_bytes > budget_bytes and batch > 1:
            batch //= 2
        elif plan.train_bytes > budget_bytes and (crop or max(padded_h, padded_w)) > 64:
            crop, batch = max(64, (crop or max(padded_h, padded_w)) // 2 // 32 * 32), 1
        else:
            smallest = estimate(height, width, config, 64, 1, 192, device_type)
            raise DoesNotFit(
                f"{name}: {height}x{width} pixels needs at least {smallest.peak_bytes / MB:,.0f} MB "
                f"(64x64 crops, 192x192 tiles), more than the {budget_bytes / MB:,.0f} MB budget"
            )


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM on Linux (ru_maxrss survives exec, so a child
    of a large process would report its parent's peak), else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
