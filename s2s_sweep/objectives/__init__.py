"""The sweep's objectives by name: what `search.objective` in a search-space file may say.

A new objective is one file with an `Objective` (base.py) and one line in REGISTRY below; every
registered objective's curve is read at every checkpoint of every trial (where it can be: those
that need a clean image are skipped on a dataset without one), so the curves table holds them all.
"""

from s2s_sweep.objectives.base import MIN_AGREEMENT, Objective, Reading
from s2s_sweep.objectives.heldout import HELDOUT
from s2s_sweep.objectives.psnr import PSNR
from s2s_sweep.objectives.ssim import SSIM

REGISTRY: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        PSNR,  # the first is the default
        SSIM,
        HELDOUT,
    )
}
DEFAULT_OBJECTIVE = next(iter(REGISTRY))
CURVES = tuple(objective.curve for objective in REGISTRY.values())
SCORE = "score"  # a trial's objective value (its curves' mean over images at the best checkpoint): Tune's metric

__all__ = ["CURVES", "DEFAULT_OBJECTIVE", "MIN_AGREEMENT", "REGISTRY", "SCORE", "Objective", "Reading", "curve_values"]


def curve_values(readings: list[Reading]) -> dict[str, list[float]]:
    """Every objective's curve over one training's checkpoints, leaving out those it cannot score."""
    clean = readings[0].clean is not None
    return {
        objective.curve: [objective.score(reading) for reading in readings]
        for objective in REGISTRY.values()
        if clean or not objective.needs_clean
    }
