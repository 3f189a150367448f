"""Bernoulli sampling of the input (paper Eq. 2-3) and the per-pass random streams."""

import numpy as np
import torch

# Separate seed streams so that model init, training, each inference pass and the
# positions of training crops never share random numbers, whatever the counts are.
INIT_STREAM, TRAIN_STREAM, INFERENCE_STREAM, CROP_STREAM = 0, 1, 2, 3


def make_generator(device: torch.device, seed: int, *stream: int) -> torch.Generator:
    """A torch.Generator on `device` seeded from (seed, *stream) via numpy's SeedSequence."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np.random.SeedSequence([seed, *stream]).generate_state(1, np.uint64)[0] >> 1))
    return generator


def per_sample_uniform(
    shape: tuple[int, ...], generators: list[torch.Generator], device: torch.device
) -> torch.Tensor:
    """Uniform [0, 1) noise of shape (len(generators), *shape), row b drawn from generators[b]."""
    uniform = torch.empty(len(generators), *shape, device=device)
    for row, generator in zip(uniform, generators, strict=True):
        row.uniform_(generator=generator)
    return uniform


def bernoulli_mask(
    shape: tuple[int, int, int], p: float, generators: list[torch.Generator], device: torch.device
) -> torch.Tensor:
    """Mask of shape (len(generators), *shape): each element kept (1) with probability 1 - p
    and dropped (0) with probability p, independently per channel and pixel."""
    return (per_sample_uniform(shape, generators, device) >= p).float()
