"""The saved best configuration: the best finished trial by the sweep's objective, at the fewest
steps within `steps_within` of its curve's peak."""

import pyarrow as pa

from model.config import S2SConfig
from s2s_sweep.configs import SearchSpace
from s2s_sweep.errors import NoTrialFinished
from s2s_sweep.objectives import REGISTRY as OBJECTIVES
from s2s_sweep.objectives import SCORE
from s2s_sweep.plots import mean_curves
from s2s_sweep.sweep.space import step_checkpoints


def best_config(trials: pa.Table, curves: pa.Table, space: SearchSpace) -> tuple[dict, dict]:
    """The best trial that scored every subset image, as run settings (with the paper's pass
    count), at the fewest steps whose mean objective is within `steps_within` of its curve's peak
    (for a warm trial: the warm steps, its seed trained the largest checkpoint); and the record
    of that choice (objective, peak, chosen point, training saved)."""
    rows = [r for r in trials.to_pylist() if r["status"] == "ok" and not r["early_stopped"] and r[SCORE] is not None]
    if not rows:
        raise NoTrialFinished(
            "no trial finished the whole subset; raise --trials or check the trials' errors in the trials table"
        )
    best = max(rows, key=lambda r: r[SCORE])
    curve = mean_curves(curves, [best["trial_id"]], OBJECTIVES[space.objective].curve)[best["trial_id"]]
    peak_steps, peak = max(curve, key=lambda point: point[1])
    steps, score = min((point for point in curve if point[1] >= peak - space.steps_within), key=lambda point: point[0])
    selection = {
        "objective": space.objective,
        "trial_id": best["trial_id"],
        "within": space.steps_within,
        "peak_steps": peak_steps,
        "peak_score": round(peak, 4),
        "chosen_steps": steps,
        "chosen_score": round(score, 4),
        "training_saved": round(1 - steps / peak_steps, 4),
    }
    settings = {
        "p": best["p"],
        "steps": steps,
        "lambda_iqa": best["lambda_iqa"],
        "passes": space.paper.get("passes", S2SConfig.passes),
    }
    if best.get("init") == "warm":
        settings |= {"init": "warm", "steps": step_checkpoints(space)[-1], "warm_steps": steps}
    return settings, selection
