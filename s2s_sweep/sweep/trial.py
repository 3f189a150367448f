"""What one trial evaluates: each subset image trained once up to the largest checkpoint, every
checkpoint scored, a report to Tune after each image."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from ray import tune

from model.config import S2SConfig
from s2s_sweep.configs import SearchSpace
from s2s_sweep.datasets import Dataset
from s2s_sweep.images import to_uint8
from s2s_sweep.objectives import REGISTRY as OBJECTIVES
from s2s_sweep.objectives import SCORE, Reading, curve_values
from s2s_sweep.run_settings import RunSettings, join, split
from s2s_sweep.sweep.space import step_checkpoints, subset_split, trial_lambda

if TYPE_CHECKING:  # replay.py imports this module
    from s2s_sweep.sweep.replay import ReplayLandscape


def image_curves(
    estimates: list[tuple[np.ndarray, np.ndarray]], noisy: np.ndarray, clean: np.ndarray | None, quantize: str
) -> dict[str, list[float]]:
    """Every objective's curve over the checkpoints of one training (denoise_at_steps' estimates)."""
    return curve_values(
        [Reading(to_uint8(estimate, quantize), heldout, noisy, clean) for estimate, heldout in estimates]
    )


@dataclass
class TrainImages:
    """What a trial evaluates in a sweep: each subset image trained once up to the largest checkpoint
    (warm: from a seed network trained first, once per trial), every checkpoint scored."""

    images: list  # (image_id, noisy, clean)
    seed_images: list  # noisy images a warm trial's seed trains on
    base: dict  # run settings every trial shares (S2SConfig and RunSettings fields, run_settings.join)
    checkpoints: list[int]
    passes: int

    def curves(self, config: dict) -> Iterator[tuple[str, dict[str, list[float]]]]:
        from model.denoiser import denoise_at_steps, train_seed  # in the trial's actor: the driver never trains

        run_config, run_settings = split(
            {
                **self.base,
                "p": config["p"],
                "lambda_iqa": trial_lambda(config),
                "init": config.get("init", self.base["init"]),
            }
        )
        seed = train_seed(self.seed_images, run_config) if run_settings.init == "warm" else None
        for image_id, noisy, clean in self.images:  # each with the seed a run gives it; its steps are the checkpoints
            image_config = run_config.replace(seed=run_settings.image_seed(run_config.seed, image_id))
            estimates = denoise_at_steps(noisy, image_config, self.checkpoints, self.passes, initial_state=seed)
            yield image_id, image_curves(estimates, noisy, clean, run_settings.quantize)


def sweep_trial(config: dict, evaluation: TrainImages | ReplayLandscape, objective: str, cpus: float) -> None:
    """One Tune trial: the curves of each subset image in turn, a report after each image (the mean
    of the objective's curves over the images so far at their best checkpoint, and PSNR and SSIM
    there where the dataset has clean images), so ASHA can stop it after any image."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    curve = OBJECTIVES[objective].curve
    curves = {}
    for done, (image_id, image) in enumerate(evaluation.curves(config), 1):
        for name, values in image.items():
            curves.setdefault(name, []).append(values)
        means = {name: np.mean(values, axis=0) for name, values in curves.items()}
        best = int(np.argmax(means[curve]))
        tune.report(
            {
                SCORE: float(means[curve][best]),
                **{f"mean_{name}": float(means[name][best]) for name in ("psnr", "ssim") if name in means},
                "best_steps": evaluation.checkpoints[best],
                "images_done": done,
                "image_id": image_id,
                "curves": json.dumps(image),
            }
        )


def sweep_inputs(
    dataset: Dataset, space: SearchSpace, base: S2SConfig, run_settings: RunSettings, seed: int
) -> tuple[list[str], TrainImages, list]:
    """Search ids; what the trials evaluate on them: the loaded (id, noisy, clean) images, the
    noisy seed images of warm trials (the dataset's first `warm_images`, as a warm run takes them),
    the step checkpoints and the trials' fixed settings; and the held-out (id, noisy, clean)
    images its best is validated on."""
    ids, heldout_ids = subset_split(dataset, space)
    images = [(image_id, *dataset.load(image_id)) for image_id in ids]
    heldout = [(image_id, *dataset.load(image_id)) for image_id in heldout_ids]
    seed_images = (
        [dataset.load(image_id)[0] for image_id in dataset.ids[: run_settings.warm_images]]
        if "warm" in space.inits
        else []
    )
    checkpoints = step_checkpoints(space)
    base_fields = {
        **join(base, run_settings),
        "steps": max(checkpoints),
        "passes": space.search_passes,
        "seed": seed,
        "log_every": max(checkpoints),
        "init": space.inits[0],
    }
    return ids, TrainImages(images, seed_images, base_fields, checkpoints, space.search_passes), heldout


def make_trainable(evaluation: TrainImages | ReplayLandscape, space: SearchSpace):
    """The Tune trainable: `sweep_trial` with what it evaluates in the object store, and its resources."""
    return tune.with_resources(
        tune.with_parameters(sweep_trial, evaluation=evaluation, objective=space.objective, cpus=space.cpus_per_trial),
        {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial},
    )
