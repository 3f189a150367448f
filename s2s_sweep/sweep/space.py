"""What a search-space file means for the search: the subset (and its held-out part), the step
checkpoints, the grid of configurations and the paper's point."""

import numpy as np

from model.config import S2SConfig
from s2s_sweep.configs import SearchSpace
from s2s_sweep.datasets import Dataset


def subset_ids(dataset: Dataset, space: SearchSpace) -> list[str]:
    """The fixed, seeded subset of images every trial is scored on (dataset order)."""
    size = min(space.subset_size, len(dataset))
    chosen = set(np.random.default_rng(space.subset_seed).choice(len(dataset), size=size, replace=False).tolist())
    return [image_id for index, image_id in enumerate(dataset.ids) if index in chosen]


def subset_split(dataset: Dataset, space: SearchSpace) -> tuple[list[str], list[str]]:
    """(search ids, held-out ids): the subset without, and with, the `subset.heldout` images (a
    seeded choice) kept out of the search to validate its best; at least one image is searched."""
    ids = subset_ids(dataset, space)
    size = min(space.subset_heldout, len(ids) - 1)
    kept = set(np.random.default_rng(space.subset_seed + 1).choice(len(ids), size=size, replace=False).tolist())
    return [i for n, i in enumerate(ids) if n not in kept], [i for n, i in enumerate(ids) if n in kept]


def step_checkpoints(space: SearchSpace) -> list[int]:
    """Training-step checkpoints scored along each training: low..high by step (5 points if no step)."""
    steps = space.search["steps"]
    if steps.step:
        return list(range(int(steps.low), int(steps.high) + 1, int(steps.step)))
    return sorted({int(round(s)) for s in np.linspace(steps.low, steps.high, 5)})


def range_values(dimension) -> list[float] | None:
    """Every value of a stepped dimension (as Optuna's grid holds them); None when continuous."""
    if dimension.step is None:
        return None
    count = int(round((dimension.high - dimension.low) / dimension.step)) + 1
    return [round(dimension.low + index * dimension.step, 10) for index in range(count)]


def config_grid(space: SearchSpace) -> list[dict] | None:
    """Every configuration DefineSpace can suggest, in Optuna's parameter names; None when a
    searched dimension is continuous."""
    ps, lam = range_values(space.search["p"]), space.search["lambda_iqa"]
    if lam.fixed_zero:
        points = None if ps is None else [{"p": p} for p in ps]
    else:
        lambdas = range_values(lam)
        if ps is None or lambdas is None:
            return None
        iqa = [{"use_iqa": True, "lambda_iqa": value} if lam.allow_zero else {"lambda_iqa": value} for value in lambdas]
        points = [{"p": p, **choice} for p in ps for choice in ([{"use_iqa": False}] if lam.allow_zero else []) + iqa]
    if points is None or len(space.inits) == 1:
        return points
    return [{"init": init, **point} for init in space.inits for point in points]


def trial_lambda(config: dict) -> float:
    return config.get("lambda_iqa", 0.0) if config.get("use_iqa", True) else 0.0


def paper_point(space: SearchSpace) -> dict:
    """The paper configuration as Optuna's first trial."""
    lam, searched = space.paper.get("lambda_iqa", S2SConfig.lambda_iqa), space.search["lambda_iqa"]
    point = {"p": space.paper.get("p", S2SConfig.p)}
    if len(space.inits) > 1:
        point["init"] = space.paper.get("init", "cold")
    if searched.allow_zero:
        point["use_iqa"] = lam > 0
    if lam > 0 and not searched.fixed_zero:
        point["lambda_iqa"] = lam
    return point
