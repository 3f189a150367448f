"""The moving average of the weights (model/averaging.py) and its read-out (S2SConfig.ema_decay)."""

import numpy as np
import pytest
import torch

from model.averaging import WeightAverage
from model.config import S2SConfig
from model.denoiser import denoise, denoise_at_steps

TINY = dict(steps=12, passes=4, lambda_iqa=0.0, precision="fp32", device="cpu")


def test_bias_corrected_average_weights_recent_steps_and_never_the_zero_start():
    net = torch.nn.Linear(2, 1, bias=False)
    decay = 0.9
    average = WeightAverage(net, decay)
    history = []
    for value in (1.0, 2.0, 4.0):
        net.weight.data.fill_(value)
        average.update(net)
        history.append(value)
    t = len(history)
    expected = sum((1 - decay) * decay ** (t - 1 - s) * w for s, w in enumerate(history)) / (1 - decay**t)
    assert average.network(net).weight.detach().numpy() == pytest.approx(np.full((1, 2), expected), rel=1e-6)
    assert net.weight.detach().numpy() == pytest.approx(np.full((1, 2), 4.0))  # the trained net is left alone


def test_one_update_reads_out_the_weights_themselves_whatever_the_decay():
    net = torch.nn.Linear(3, 2)
    average = WeightAverage(net, 0.999)
    average.update(net)
    for mine, theirs in zip(average.network(net).parameters(), net.parameters()):
        assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-7)


def test_an_average_read_out_at_a_step_equals_a_training_that_stopped_there(astronaut_pair):
    """The sweep reads one training at every step budget: a bias-corrected average keeps that."""
    noisy, _ = astronaut_pair
    config = S2SConfig(p=0.4, ema_decay=0.9, **TINY)
    (at_six, _), (at_twelve, _) = denoise_at_steps(noisy[:64, :64], config, [6, 12], passes=4)
    stopped_at_six = denoise(noisy[:64, :64], config.replace(steps=6)).denoised
    assert np.array_equal(at_six, stopped_at_six)
    assert not np.array_equal(at_six, at_twelve)


def test_the_average_changes_the_result_reproducibly_and_zero_is_the_raw_weights(astronaut_pair):
    noisy, _ = astronaut_pair
    raw = denoise(noisy[:64, :64], S2SConfig(p=0.4, **TINY)).denoised
    averaged = denoise(noisy[:64, :64], S2SConfig(p=0.4, ema_decay=0.9, **TINY)).denoised
    again = denoise(noisy[:64, :64], S2SConfig(p=0.4, ema_decay=0.9, **TINY)).denoised
    assert not np.array_equal(raw, averaged)
    assert np.array_equal(averaged, again)


@pytest.mark.parametrize("decay", [1.0, -0.1, "0.9"])
def test_a_decay_outside_its_range_names_the_field(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        S2SConfig(ema_decay=decay)
