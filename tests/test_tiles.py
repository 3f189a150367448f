"""Large images: the plan (whole image vs crops and tiles), crop training, tiled inference, the memory model."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FLOW_PRECISION, REPO

from model.config import S2SConfig
from model.denoiser import build_network, denoise, ensemble, infer, to_batch, train
from model.memory import IMAGE_BYTES_PER_PIXEL, MB, WHOLE_IMAGE_PIXELS, DoesNotFit, estimate_memory, fit_memory
from model.tiles import CropSampler, tile_starts, tiles

CPU = torch.device("cpu")
FAST = S2SConfig(steps=3, passes=2, lambda_iqa=0.0)


def test_whole_image_at_the_threshold_crops_and_tiles_above_it():
    at = estimate_memory(512, 512, FAST)
    assert (at.crop, at.batch, at.tile) == (0, 1, 0)  # the paper: whole image, one piece
    above = estimate_memory(512, 513, FAST)  # pads to 512 x 544
    assert (above.crop, above.batch, above.tile) == (256, WHOLE_IMAGE_PIXELS // 256**2, 512)
    assert above.train_bytes < 1.2 * at.train_bytes  # training memory no longer grows with the image
    huge = estimate_memory(6000, 8000, FAST)
    assert huge.train_bytes - above.train_bytes < IMAGE_BYTES_PER_PIXEL * 6000 * 8000 + 1  # only the image copies grow


def test_budget_shrinks_tiles_then_batch_then_crop_and_reports_what_cannot_fit():
    roomy = fit_memory(3072, 4096, FAST, 64 * 1024 * MB)
    tight = fit_memory(3072, 4096, FAST, roomy.train_bytes - 1)
    assert (tight.crop, tight.batch) == (256, 2) and tight.peak_bytes < roomy.train_bytes
    with pytest.raises(
        DoesNotFit,
        match=r"photo.png: 3072x4096 pixels needs at least [\d,]+ MB \(64x64 crops, 192x192 tiles\), "
        r"more than the 500 MB budget",
    ):
        fit_memory(3072, 4096, FAST, 500 * MB, name="photo.png")


def test_crops_are_seeded_inside_the_image_and_cover_short_sides_whole():
    padded = to_batch(np.random.default_rng(0).random((100, 300, 3), dtype=np.float32), CPU)  # pads to 128 x 320
    sampler = CropSampler(padded, 100, 300, crop=128, batch=3, seed=0)
    crops = sampler.sample()
    assert crops.shape == (3, 3, 128, 128) and sampler.valid == (100, 128)
    again = CropSampler(padded, 100, 300, crop=128, batch=3, seed=0).sample()
    assert torch.equal(crops, again)
    assert not torch.equal(crops[0], crops[1])  # different places
    for crop in crops:  # each one is a window of the padded image starting at row 0
        assert any(torch.equal(crop, padded[0, :, :, left : left + 128]) for left in range(300 - 128 + 1))


@pytest.mark.slow
def test_crop_training_learns_and_is_reproducible():
    image = np.random.default_rng(3).random((96, 160, 3), dtype=np.float32)
    config = FAST.replace(steps=4, crop_size=64, crop_batch=2, log_every=1)
    first, again = denoise(image, config), denoise(image, config)
    assert (first.plan.crop, first.plan.batch) == (64, 2)
    assert np.array_equal(first.denoised, again.denoised) and first.denoised.shape == image.shape
    whole = denoise(image, FAST.replace(steps=4, log_every=1))
    assert whole.plan.crop == 0 and not np.array_equal(whole.denoised, first.denoised)


def test_one_tile_covering_the_image_equals_the_untiled_ensemble():
    config = FAST.replace(passes=3)
    net = build_network(3, config, CPU)
    padded = to_batch(np.random.default_rng(1).random((90, 200, 3), dtype=np.float32), CPU)
    untiled = ensemble(net, padded, config, batch_size=1, on_batch=lambda count: None)[0].clamp(0, 1)[None]
    assert torch.equal(infer(net, padded, config, tile=0).denoised, untiled)
    assert torch.equal(infer(net, padded, config, tile=256).denoised, untiled)  # 96 x 224 fits one 256 tile
    assert not torch.equal(infer(net, padded, config, tile=192).denoised, untiled)  # two tiles across


def test_tiles_overlap_and_cover_every_pixel_with_positive_weight():
    assert tile_starts(512, 512) == [0]
    starts = tile_starts(1000, 192)
    assert starts[0] == 0 and starts[-1] == 1000 - 192
    assert all(b - a <= 192 - 64 for a, b in zip(starts, starts[1:]))  # overlap >= 64
    coverage = torch.zeros(320, 1000)
    for rows, columns, weights in tiles(320, 1000, 192):
        coverage[rows, columns] += weights
    assert coverage.min() > 0.01


@pytest.mark.slow
def test_tiled_inference_of_a_flat_image_shows_no_seam():
    rng = np.random.default_rng(5)
    flat = np.clip(0.5 + rng.normal(0, 0.1, (128, 448, 3)), 0, 1).astype(np.float32)
    config = FAST.replace(steps=15, passes=6, lr=1e-3, precision=FLOW_PRECISION)
    net = build_network(3, config, CPU)
    padded = to_batch(flat, CPU)
    # trained on the left 128 x 128 (the noise is the same everywhere): a third of the steps' cost
    train(net, to_batch(flat[:, :128], CPU), 128, 128, config, estimate_memory(128, 128, config))
    tiled = infer(net, padded, config, tile=192).denoised[0].mean(dim=(0, 1))  # column means (448,), 3 tiles across
    steps = (tiled[1:] - tiled[:-1]).abs()
    borders = sorted({s for start in tile_starts(448, 192) for s in (start - 1, start + 191) if 0 <= s < 447})
    inside = torch.ones(447, dtype=torch.bool)
    inside[borders] = False
    assert steps[borders].max() <= 3 * steps[inside].median(), (steps[borders], steps[inside].median())


def peak_rss_of(height: int, width: int, config: dict) -> tuple[float, dict]:
    """Peak RSS (bytes) of a fresh process that denoises a random height x width image."""
    script = (
        "import json, sys, numpy as np, torch; torch.set_num_threads(2)\n"
        "from model.config import S2SConfig; from model.denoiser import denoise; from model.memory import "
        "peak_rss_bytes\n"
        f"r = denoise(np.random.default_rng(0).random(({height}, {width}, 3), dtype=np.float32), "
        "S2SConfig(**json.loads(sys.argv[1])))\n"
        "print(peak_rss_bytes())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(done.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "height, width, settings",
    [
        (256, 256, {}),
        (700, 900, {"crop_size": 128, "crop_batch": 4, "tile_size": 256}),
        (128, 128, {"precision": "bf16"}),  # bf16 is emulated (slow) where the CPU lacks it: a small image
    ],
)
def test_memory_estimate_is_within_25_percent_of_the_measured_peak(height, width, settings):
    config = {"steps": 2, "passes": 1, "lambda_iqa": 0.0, **settings}
    measured = peak_rss_of(height, width, config)
    predicted = estimate_memory(height, width, S2SConfig(**config)).peak_bytes
    assert 0.75 <= measured / predicted <= 1.25, (measured / MB, predicted / MB)
