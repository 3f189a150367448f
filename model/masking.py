"""Bernoulli sampling of the input (paper Eq. 2-3) and of dropout, and the per-pass random streams."""

import math

import numpy as np
import torch

# Separate seed streams so that model init, training, each inference pass and the
# positions of training crops never share random numbers, whatever the counts are.
INIT_STREAM, TRAIN_STREAM, INFERENCE_STREAM, CROP_STREAM = 0, 1, 2, 3

# Each random 64-bit word gives four independent 16-bit uniforms: a quarter of the generator
# calls of one float uniform per entry (the RNG was 20% of an inference pass). The price is that
# p acts rounded to a multiple of 2^-16, at most 7.6e-6 away.
LEVELS_16_BIT = 2**16


def make_generator(device: torch.device, seed: int, *stream: int) -> torch.Generator:
    """A torch.Generator on `device` seeded from (seed, *stream) via numpy's SeedSequence."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np.random.SeedSequence([seed, *stream]).generate_state(1, np.uint64)[0] >> 1))
    return generator


def keep_mask(
    shape: tuple[int, ...], p: float, generators: list[torch.Generator], device: torch.device
) -> torch.Tensor:
    """Bool (len(generators), *shape): each entry kept (True) with probability 1 - p, independently,
    row b drawn from generators[b] alone (so any batching of rows gives the same rows)."""
    count = math.prod(shape)
    words = torch.empty(len(generators), -(-count // 4), dtype=torch.int64, device=device)
    for row, generator in zip(words, generators, strict=True):
        row.random_(-(2**63), None, generator=generator)  # the full 64-bit range
    uniform_16_bit = words.view(torch.int16)[:, :count]  # uniform on [-2^15, 2^15)
    dropped_levels = round(p * LEVELS_16_BIT)
    return (uniform_16_bit >= dropped_levels - LEVELS_16_BIT // 2).reshape(len(generators), *shape)


def bernoulli_mask(
    shape: tuple[int, int, int], p: float, generators: list[torch.Generator], device: torch.device
) -> torch.Tensor:
    """Float mask of shape (len(generators), *shape): each element kept (1) with probability 1 - p
    and dropped (0) with probability p, independently per channel and pixel."""
    return keep_mask(shape, p, generators, device).float()
