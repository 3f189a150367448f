"""Which seed each image trains with (s2s_sweep/run_settings.py `seeding`): its own, derived from the run's
seed and its id, the same in a run, a sweep trial and the held-out validation; or the run's, as runs recorded
before 2026-11-30 did. Real trainings of tiny images, no Ray."""

import numpy as np
import pytest

from model.config import S2SConfig
from model.denoiser import denoise
from s2s_sweep.images import to_uint8
from s2s_sweep.methods import Method, denoise_image
from s2s_sweep.run_settings import RunSettings, image_seed, join
from s2s_sweep.sweep.trial import TrainImages
from s2s_sweep.sweep.validation import score_settings

TINY = S2SConfig(steps=4, passes=2, lambda_iqa=0.0, precision="fp32")


@pytest.fixture(scope="module")
def noisy_clean():
    rng = np.random.default_rng(3)
    clean = rng.random((40, 40, 3), dtype=np.float32)
    return np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32), clean


def test_an_image_seed_is_the_images_own_the_same_every_time_and_seeding_run_keeps_the_runs():
    seeds = {image_seed(seed, image_id) for seed in (0, 1) for image_id in ("0000", "0001", "chair_5")}
    assert len(seeds) == 6 and all(0 <= seed < 2**31 for seed in seeds)
    # pinned: not Python's salted hash (the same in every process and on every node), and a change to the
    # derivation would change every run's results
    assert (image_seed(0, "0000"), image_seed(1, "chair_5")) == (347610843, 719246850)
    assert RunSettings().image_seed(7, "0000") == image_seed(7, "0000")
    assert RunSettings(seeding="run").image_seed(7, "0000") == 7
    with pytest.raises(ValueError, match="seeding: expected image or run, got 'pixel'"):
        RunSettings(seeding="pixel")


def test_two_images_of_a_run_train_with_streams_of_their_own_which_the_single_image_cli_reproduces(noisy_clean):
    noisy, clean = noisy_clean  # the same pixels under two ids: only the seed tells them apart
    own = [denoise_image(name, noisy, clean, Method(config=TINY), None, 1) for name in ("a", "b")]
    assert not np.array_equal(own[0]["denoised"], own[1]["denoised"])
    one_seed = Method(config=TINY, run=RunSettings(seeding="run"))
    shared = [denoise_image(name, noisy, clean, one_seed, None, 1) for name in ("a", "b")]
    assert np.array_equal(shared[0]["denoised"], shared[1]["denoised"])  # one stream for both: the old seeding
    alone = denoise(noisy, TINY.replace(seed=image_seed(TINY.seed, "b")))  # `python -m s2s_sweep.denoise --seed`
    assert np.array_equal(own[1]["denoised"], to_uint8(alone.denoised, "round"))


def test_a_sweep_trial_and_the_heldout_validation_train_an_image_as_a_run_does(noisy_clean):
    noisy, clean = noisy_clean
    run = denoise_image("b", noisy, clean, Method(config=TINY), None, 1)
    base = {**join(TINY, RunSettings()), "log_every": TINY.steps}
    trial = TrainImages([("b", noisy, clean)], [], base, [TINY.steps], TINY.passes)
    ((_, curves),) = trial.curves({"p": TINY.p, "lambda_iqa": 0.0})
    assert curves["psnr"] == [pytest.approx(run["psnr"], abs=1e-9)]
    settings = {"p": TINY.p, "steps": TINY.steps, "lambda_iqa": 0.0, "init": "cold"}
    assert score_settings("b", noisy, clean, None, base, settings, "psnr", 1) == pytest.approx(run["psnr"], abs=1e-9)
