import torch

from model.masking import bernoulli_mask, keep_mask, make_generator

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


def test_each_lane_of_a_random_word_keeps_with_probability_1_minus_p():
    # four entries share one 64-bit word: each lane (position mod 4) must be Bernoulli(1 - p) on its own
    for p in (0.05, 0.4, 0.9, 0.999):
        keep = keep_mask((3, 256, 256), p, [make_generator(CPU, 5)], CPU).flatten().reshape(-1, 4).double()
        sd = (p * (1 - p) / keep.shape[0]) ** 0.5
        assert (keep.mean(0) - (1 - p)).abs().max().item() < 5 * sd + 2**-16, p


def test_entries_of_a_mask_are_jointly_independent():
    # the 16 keep/drop patterns of four neighbouring entries (one word) and of entries a word apart
    # appear with their product probabilities: a chi-square test at a far tail
    p = 0.4
    keep = keep_mask((4, 256, 256), p, [make_generator(CPU, 6)], CPU).flatten().long()
    for offsets in [(0, 1, 2, 3), (0, 4, 8, 12), (1, 2, 5, 6)]:
        windows = torch.stack([keep[o : keep.numel() - 16 + o : 16] for o in offsets])
        patterns = (windows * torch.tensor([[1], [2], [4], [8]])).sum(0)
        observed = torch.bincount(patterns, minlength=16).double()
        kept = torch.tensor([k.bit_count() for k in range(16)], dtype=torch.float64)
        expected = patterns.numel() * (1 - p) ** kept * p ** (4 - kept)
        chi_square = ((observed - expected) ** 2 / expected).sum().item()
        assert chi_square < 50, (offsets, chi_square)  # P(chi2_15 > 50) ~ 1e-5


def test_rows_depend_on_their_own_generator_only():
    together = keep_mask((3, 40, 24), 0.5, [make_generator(CPU, 7, 2, i) for i in range(3)], CPU)
    alone = [keep_mask((3, 40, 24), 0.5, [make_generator(CPU, 7, 2, i)], CPU)[0] for i in range(3)]
    assert torch.equal(together, torch.stack(alone))
    assert not torch.equal(together[0], together[1])
