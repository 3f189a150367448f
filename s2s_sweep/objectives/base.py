"""What a sweep objective is: the score a trial maximises, read at every step checkpoint of every
subset image (one training gives the whole curve), averaged over the images the trial has scored.

An objective is one small file with an `Objective` and one line in REGISTRY (`__init__.py`); the
search-space file picks one with `search.objective`, and the trials table, MLflow and
best_config.yaml name it.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# A proxy (an objective that needs no clean image) may drive a family's sweep only where it ranks
# settings as PSNR does: the Spearman correlation between the two over the landscape's (p, steps),
# per image then the mean over images, at least this (benchmarks/bench_landscape.py, docs/sweep.md).
MIN_AGREEMENT = 0.8


@dataclass(frozen=True)
class Reading:
    """One checkpoint of one training, as an objective scores it."""

    denoised: np.ndarray  # uint8, as the run writes it
    heldout: np.ndarray  # the ensemble's mean prediction of each entry by the passes that dropped it
    noisy: np.ndarray
    clean: np.ndarray | None  # None where the dataset has no clean references


@dataclass(frozen=True)
class Objective:
    name: str  # the space file's `search.objective`, the trials table's `objective`
    curve: str  # the curves table's `metric` (and the landscape's column) it is read from
    label: str  # axes, the report
    unit: str  # of `search.steps_within`: "dB", or "" for a unitless score
    within: float  # the default `search.steps_within`
    needs_clean: bool
    score: Callable[[Reading], float]  # higher is better

    @property
    def proxy(self) -> bool:
        """Scores without a clean image: allowed only where the space file records its agreement."""
        return not self.needs_clean
