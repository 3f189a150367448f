"""Does the saved best beat the paper's configuration on images the search did not see?

The sweep keeps `subset.heldout` of its subset's images out of the search. Once the best is
chosen, each held-out image is trained with the best settings and with the paper's (with the
search's passes), one Ray task per (settings, image), and scored by PSNR against its clean image
(by the held-out score where the dataset has none). The verdict is the project's rule
(s2s_sweep/rule.py, docs/variance.md): paired over those images, the lower end of the 95%
Student-t interval of the mean difference best − paper is above -0.1 dB. It is written, always,
as the `heldout:` block of best_config.yaml (and to MLflow and the report); where it is not
shown, `--config best` runs the paper's configuration (configs.settings_to_run).
"""

import pyarrow as pa
import ray

from s2s_sweep.configs import SearchSpace
from s2s_sweep.images import to_uint8
from s2s_sweep.objectives import REGISTRY as OBJECTIVES
from s2s_sweep.objectives import Reading
from s2s_sweep.rule import RULE_MARGIN_DB, paired_rule
from s2s_sweep.run_settings import split

MIN_IMAGES = 4  # fewer paired images give no interval worth the name


def seed_for(seed_images: list, base: dict, settings: dict, cpus: float) -> dict:
    """The seed network a warm best starts its images from, trained once for every held-out image."""
    import torch  # these run in Ray tasks; the sweep's driver imports this module and never trains

    from model.denoiser import train_seed

    torch.set_num_threads(max(1, int(cpus)))
    return train_seed(seed_images, split({**base, **settings})[0])


def score_settings(
    image_id: str, noisy, clean, seed: dict | None, base: dict, settings: dict, objective: str, cpus: float
) -> float:
    """`objective`'s score of image `image_id` denoised with `settings` (run settings as best_config.yaml
    writes them), from `seed` where they are a warm start, with the image's seed as a run gives it."""
    import torch

    from model.denoiser import denoise_at_steps

    torch.set_num_threads(max(1, int(cpus)))
    config, run_settings = split({**base, **settings})
    config = run_settings.image_config(config, image_id)
    ((estimate, heldout),) = denoise_at_steps(noisy, config, [config.steps], config.passes, initial_state=seed)
    return OBJECTIVES[objective].score(Reading(to_uint8(estimate, run_settings.quantize), heldout, noisy, clean))


def paired_verdict(candidate: list[float], reference: list[float]) -> dict:
    """The rule (s2s_sweep/rule.py) on paired scores, as the `heldout:` block writes it: the mean
    gain, its 95% interval, and whether the rule shows the candidate at least as good."""
    rule = paired_rule(candidate, reference)
    low, high = rule["ci95_db"]
    return {"gain_db": round(rule["mean_db"], 4), "ci95_db": [round(low, 4), round(high, 4)], "shown": rule["passes"]}


def validate_best(best: dict, space: SearchSpace, images: list, seed_images: list, base: dict) -> tuple[dict, pa.Table]:
    """The `heldout:` block for `best` on the held-out `images` ((image_id, noisy, clean)), and
    the table of their scores (image, settings: best | paper, metric, value)."""
    objective = OBJECTIVES["psnr" if all(clean is not None for _, _, clean in images) else "heldout"]
    metric = objective.curve
    block = {"images": len(images), "metric": metric, "paper": dict(space.paper)}  # what `--config best` falls back to
    if len(images) < MIN_IMAGES:
        reason = f"{len(images)} held-out images (subset.heldout in {space.path}), fewer than {MIN_IMAGES}"
        return {**block, "gain_db": None, "ci95_db": None, "shown": False, "why": reason}, pa.table({})
    paper = {key: space.paper[key] for key in ("p", "steps", "lambda_iqa") if key in space.paper}
    if space.search["lambda_iqa"].fixed_zero:  # the search ran without the IQA loss: so does its reference
        paper["lambda_iqa"] = 0.0
    candidates = {
        "best": {"init": "cold", **{k: v for k, v in best.items() if k != "passes"}},
        "paper": {**paper, "init": "cold"},
    }
    base = {**base, "passes": space.search_passes}
    resources = {"num_cpus": space.cpus_per_trial, "num_gpus": space.gpus_per_trial}
    seeds = {  # a warm start's seed: one task, its weights shared through the object store
        name: ray.remote(**resources)(seed_for).remote(seed_images, base, settings, space.cpus_per_trial)
        if settings["init"] == "warm"
        else None
        for name, settings in candidates.items()
    }
    task = ray.remote(**resources)(score_settings)
    pending = {
        (name, image_id): task.remote(
            image_id, noisy, clean, seeds[name], base, settings, objective.name, space.cpus_per_trial
        )
        for name, settings in candidates.items()
        for image_id, noisy, clean in images
    }
    scores = dict(zip(pending, ray.get(list(pending.values())), strict=True))
    block |= paired_verdict(*([scores[(name, image_id)] for image_id, _, _ in images] for name in ("best", "paper")))
    if not block["shown"]:
        low = block["ci95_db"][0]
        block["why"] = f"the interval's lower end {low:+.2f} dB is not above {-RULE_MARGIN_DB} dB (the rule)"
    rows = [
        {"image_id": image_id, "settings": name, "metric": metric, "value": value}
        for (name, image_id), value in scores.items()
    ]
    return block, pa.Table.from_pylist(rows)
