import torch

from model.masking import bernoulli_mask, make_generator

CPU = torch.device("cpu")


def test_mask_keeps_each_entry_with_probability_1_minus_p():
    mask = bernoulli_mask((3, 128, 128), 0.7, [make_generator(CPU, 0)], CPU)
    assert mask.shape == (1, 3, 128, 128)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(mask.mean().item() - 0.3) < 0.01


def test_mask_is_independent_per_channel_not_per_pixel():
    p = 0.4
    mask = bernoulli_mask((3, 128, 128), p, [make_generator(CPU, 1)], CPU)[0]
    all_channels_equal = (mask == mask[0]).all(dim=0).float().mean().item()
    assert abs(all_channels_equal - ((1 - p) ** 3 + p**3)) < 0.02  # would be 1.0 for a per-pixel mask
    # and uncorrelated across channels
    corr = torch.corrcoef(mask.reshape(3, -1))
    assert corr.sub(torch.eye(3)).abs().max().item() < 0.03


def test_masks_are_reproducible_per_generator_and_differ_between_seeds():
    draw = lambda seed: bernoulli_mask((3, 32, 32), 0.5, [make_generator(CPU, seed, 2, 0)], CPU)  # noqa: E731
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_seed_streams_are_distinct():
    a = torch.rand(8, generator=make_generator(CPU, 0, 1))
    b = torch.rand(8, generator=make_generator(CPU, 0, 2, 1))
    c = torch.rand(8, generator=make_generator(CPU, 0, 2, 2))
    assert not torch.equal(a, b) and not torch.equal(b, c)
