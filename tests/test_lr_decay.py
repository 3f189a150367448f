"""The learning-rate decay over the end of training (S2SConfig.lr_decay), a stabiliser candidate."""

import numpy as np
import pytest

from model.config import S2SConfig
from model.denoiser import denoise, denoise_at_steps, fit_memory, learning_rate, memory_budget, prepare, train

TINY = dict(p=0.4, steps=10, passes=4, lambda_iqa=0.0, precision="fp32", device="cpu")


def test_the_rate_is_held_then_falls_linearly_and_the_final_step_still_learns():
    config = S2SConfig(lr=1.0, steps=10, lr_decay=0.3)  # the last 3 steps decay
    assert [learning_rate(config, step) for step in range(1, 11)] == pytest.approx([1.0] * 7 + [0.75, 0.5, 0.25])
    assert all(learning_rate(config.replace(lr_decay=0.0), step) == 1.0 for step in range(1, 11))  # the paper


def weights_after(noisy, config: S2SConfig, step: int) -> dict:
    """The network's weights right after `step` of a training to config.steps."""
    height, width, _ = noisy.shape
    net, padded = prepare(noisy, config)
    plan = fit_memory(height, width, config, memory_budget(config, padded.device), padded.device.type)
    seen = {}
    train(
        net,
        padded,
        height,
        width,
        config,
        plan,
        checkpoints={step},
        on_checkpoint=lambda _: seen.update({name: value.clone() for name, value in net.state_dict().items()}),
    )
    return seen


def test_a_decayed_training_is_the_held_one_until_its_decay_starts_then_ends_elsewhere(astronaut_pair):
    noisy = astronaut_pair[0][:64, :64]
    held, decayed = S2SConfig(**TINY), S2SConfig(**TINY, lr_decay=0.3)
    before_held, before_decayed = weights_after(noisy, held, 7), weights_after(noisy, decayed, 7)
    assert all(np.array_equal(before_held[name], before_decayed[name]) for name in before_held)
    assert not np.array_equal(denoise(noisy, held).denoised, denoise(noisy, decayed).denoised)
    assert np.array_equal(denoise(noisy, decayed).denoised, denoise(noisy, decayed).denoised)  # reproducible


def test_a_decayed_training_is_read_out_only_at_its_final_step(astronaut_pair):
    noisy = astronaut_pair[0][:64, :64]
    config = S2SConfig(**TINY, lr_decay=0.3)
    ((at_ten, _),) = denoise_at_steps(noisy, config, [10], passes=4)
    assert np.array_equal(at_ten, denoise(noisy, config).denoised)
    with pytest.raises(ValueError, match="lr_decay 0.3: a schedule tied to the final step"):
        denoise_at_steps(noisy, config, [5, 10], passes=4)


@pytest.mark.parametrize("fraction", [1.5, -0.1, "0.3"])
def test_a_decay_outside_its_range_names_the_field(fraction):
    with pytest.raises(ValueError, match="lr_decay"):
        S2SConfig(lr_decay=fraction)
