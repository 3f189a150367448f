import pytest
import torch

from model.masking import bernoulli_mask, make_generator
from model.network import S2SPlusNet, pad_to_network
from model.sizes import check_image_size, padded_size

CPU = torch.device("cpu")


def generators(*seeds):
    return [make_generator(CPU, seed) for seed in seeds]


def test_parameter_count_matches_the_authors_network():
    assert sum(p.numel() for p in S2SPlusNet(3).parameters()) == 1_253_571
    # grayscale: the first gated conv (96 filters) loses 4 input channels, the head 2 outputs
    assert sum(p.numel() for p in S2SPlusNet(1).parameters()) == 1_253_571 - 4 * 96 * 9 - (2 * 96 * 9 + 2)


def test_init_is_normal_002_with_zero_biases():
    net = S2SPlusNet(3)
    net.reset_parameters(make_generator(CPU, 0))
    weights = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, torch.nn.Conv2d)])
    biases = torch.cat([m.bias for m in net.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
    assert biases.abs().max().item() == 0.0


@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_and_mask_first_input(channels):
    net = S2SPlusNet(channels)
    assert net.encoder_in[0].conv.in_channels == 2 * channels
    noisy = torch.rand(2, channels, 64, 96)
    mask = bernoulli_mask((channels, 64, 96), 0.4, generators(1, 2), CPU)
    assert net(noisy, mask, generators(3, 4)).shape == (2, channels, 64, 96)


def test_dropout_is_live_at_inference_and_reproducible_per_generator():
    net = S2SPlusNet(3, p=0.5).eval()  # eval() must not switch dropout off
    noisy = torch.rand(1, 3, 64, 64)
    mask = torch.ones_like(noisy)
    with torch.inference_mode():
        first, again, other = (net(noisy, mask, generators(seed)) for seed in (7, 7, 8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_dropout_drops_a_fraction_p_and_rescales_the_rest():
    net = S2SPlusNet(3, p=0.3)
    h = torch.ones(1, 96, 64, 64)
    out = net.dropout(h, generators(0))
    assert abs((out == 0).float().mean().item() - 0.3) < 0.01
    assert torch.allclose(out[out != 0], torch.tensor(1 / 0.7))


def test_dropout_draws_the_same_numbers_in_either_memory_format():
    net = S2SPlusNet(3, p=0.5)
    h = torch.rand(1, 48, 32, 32)
    contiguous = net.dropout(h, generators(5))
    channels_last = net.dropout(h.contiguous(memory_format=torch.channels_last), generators(5))
    assert torch.equal(contiguous, channels_last)


def test_padding_reaches_a_multiple_of_32_and_crops_back_losslessly():
    image = torch.rand(1, 3, 81, 100)
    padded = pad_to_network(image)
    assert padded.shape[-2:] == padded_size(81, 100) == (96, 128)
    assert torch.equal(padded[..., :81, :100], image)
    assert padded_size(40, 40) == (64, 64)  # the deepest map must be at least 2x2


def test_images_too_small_for_the_network_are_rejected_clearly():
    check_image_size(33, 33)
    with pytest.raises(ValueError, match=r"32x40 pixels is too small.*>= 33"):
        check_image_size(32, 40)
    with pytest.raises(ValueError, match="too small"):
        pad_to_network(torch.rand(1, 3, 20, 200))


def test_network_rejects_a_p_outside_0_1():
    with pytest.raises(ValueError, match=r"p: expected a dropout probability in \(0, 1\)"):
        S2SPlusNet(3, p=1.0)
