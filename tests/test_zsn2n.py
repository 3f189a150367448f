"""Zero-Shot Noise2Noise as its paper states it (model/zsn2n.py), and as a method of the runner."""

import json

import numpy as np
import pytest
import torch

from model import zsn2n
from model.config import S2SConfig
from s2s_sweep.methods import Method, denoise_image
from s2s_sweep.run import main


def test_the_network_has_the_papers_size_and_the_downsampler_averages_each_diagonal():
    assert zsn2n.parameter_count(3) == 22275  # "~22k parameters" for RGB: 3·48·9+48 + 48·48·9+48 + 48·3+3
    image = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    one, two = zsn2n.pair_downsample(image)
    assert one.shape == two.shape == (1, 2, 2, 3)
    block = image[0, 1, 2:4, 4:6]  # the last 2 x 2 block of channel 1
    assert one[0, 1, 1, 2] == pytest.approx((block[0, 1] + block[1, 0]) / 2)  # anti-diagonal
    assert two[0, 1, 1, 2] == pytest.approx((block[0, 0] + block[1, 1]) / 2)  # diagonal
    assert zsn2n.pair_downsample(torch.zeros(1, 3, 5, 7))[0].shape == (1, 3, 2, 3)  # odd edges dropped


def test_a_short_training_denoises_and_is_reproducible_from_its_seed(astronaut_pair):
    noisy, clean = (image[:48, :48] for image in astronaut_pair)
    first = zsn2n.zsn2n_denoise(noisy, seed=3, device="cpu", iterations=150)
    again = zsn2n.zsn2n_denoise(noisy, seed=3, device="cpu", iterations=150)
    other = zsn2n.zsn2n_denoise(noisy, seed=4, device="cpu", iterations=150)
    np.testing.assert_array_equal(first.denoised, again.denoised)
    assert not np.array_equal(first.denoised, other.denoised)
    mse = lambda image: float(np.mean((image - clean) ** 2))  # noqa: E731
    assert mse(first.denoised) < 0.6 * mse(noisy)
    assert first.denoised.shape == noisy.shape and first.denoised.min() >= 0 and first.denoised.max() <= 1


def test_its_settings_are_the_papers_and_only_seed_seeding_quantize_and_memory_are_settable(tmp_path, capsys):
    method = Method("zsn2n", S2SConfig(seed=2, steps=99, p=0.6))
    settings = method.settings
    assert settings == {
        "method": "zsn2n",
        "quantize": "round",
        "seed": 2,
        "seeding": "image",  # each image its own seed (run_settings.py), as for S2S+
        "iterations": 2000,
        "lr": 0.001,
        "lr_halved_after": 1500,
        "hidden_channels": 48,
    }
    assert Method.from_settings(json.loads(json.dumps(settings))).hash == method.hash
    assert Method("zsn2n", S2SConfig(seed=2)).hash == method.hash  # S2S+'s settings do not touch it
    row = method.row_values()
    assert (row["seed"], row["steps"], row["p"], row["method"]) == (2, 2000, None, "zsn2n")
    assert method.spec.learned  # takes a GPU where the cluster has one, like S2S+
    assert main(["demo", "--method", "zsn2n", "--set", "p=0.5", "--out", str(tmp_path)]) == 2
    assert "--method zsn2n takes only quantize= and memory_mb= and seed= and seeding=" in capsys.readouterr().err


@pytest.mark.slow
def test_one_image_through_the_runners_task_signature():
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0.2, 0.8, 40, dtype=np.float32), (40, 1))[..., None].repeat(3, axis=2)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    row = denoise_image("x", noisy, clean, Method("zsn2n"), sigma=None, cpus=1)
    # it denoises: its gain on this 40² ramp moves 4.5 to 7.1 dB with the seed (seeds 0-4), the identity gains 0
    assert row["psnr"] > row["noisy_psnr"] + 3, (row["psnr"], row["noisy_psnr"])
    assert row["device"] == "cpu" and row["precision"] == "fp32" and row["train_seconds"] > 0
    assert row["denoised"].dtype == np.uint8
