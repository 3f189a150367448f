"""The sweep's figures and the curves they draw: the objective's score against p, steps and
λ_IQA, and against compute (each trial's mean curve, their front, the best's choice). Read by the
sweep when it ends and by the report from the Parquet tables; no Ray Tune, no Optuna here, so an
offline report loads neither.
"""

import io

import pyarrow as pa

from s2s_sweep.objectives import REGISTRY as OBJECTIVES
from s2s_sweep.objectives import SCORE


def mean_curves(curves: pa.Table, trial_ids: list[str], metric: str) -> dict[str, list[tuple[int, float]]]:
    """Each trial's mean `metric` curve over its scored images: [(steps, value), ...] per trial."""
    frame = curves.to_pandas()
    frame = frame[(frame["metric"] == metric) & frame["trial_id"].isin(trial_ids)]
    means = frame.groupby(["trial_id", "steps"])["value"].mean()
    return {
        trial_id: [(int(steps), float(value)) for steps, value in means[trial_id].items()]
        for trial_id in trial_ids
        if trial_id in means.index
    }


def compute_front(curves: dict[str, list[tuple[int, float]]]) -> list[tuple[int, float, str]]:
    """The score-vs-compute front: the (steps, mean score, trial) points no other point beats
    with as few steps or fewer, in order of steps."""
    points = sorted(
        ((steps, score, trial_id) for trial_id, curve in curves.items() for steps, score in curve),
        key=lambda point: (point[0], -point[1]),
    )
    front = []
    for point in points:
        if not front or point[1] > front[-1][1]:
            front.append(point)
    return front


def sweep_plots(trials: pa.Table, curves: pa.Table, selection: dict) -> dict[str, bytes]:
    """The objective's score against p, steps and λ_IQA; and against compute: each trial's mean
    score-vs-steps curve, the front of all their points, the best's peak and the point chosen
    (`best_config`'s selection)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objective = OBJECTIVES[selection["objective"]]
    rows = [r for r in trials.to_pylist() if r[SCORE] is not None]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for axis, key in zip(axes, ("p", "steps", "lambda_iqa"), strict=True):
        colours = ["tab:blue" if not r["early_stopped"] else "tab:gray" for r in rows]
        axis.scatter([r[key] for r in rows], [r[SCORE] for r in rows], c=colours)
        axis.set_xlabel(key + (" (0 drawn at the left edge)" if key == "lambda_iqa" else ""))
        axis.set_ylabel(f"mean {objective.label}")
        if key == "lambda_iqa" and any(r[key] > 0 for r in rows):
            axis.set_xscale("symlog", linthresh=min(r[key] for r in rows if r[key] > 0))
    figure.suptitle("trials (grey: stopped early)")
    plots = {"score_vs_params.png": _png(figure)}

    figure, axis = plt.subplots(figsize=(6, 4), constrained_layout=True)
    trial_curves = mean_curves(curves, sorted(set(curves["trial_id"].to_pylist())), objective.curve)
    for trial_id, curve in trial_curves.items():
        axis.plot(*zip(*curve, strict=True), marker=".", alpha=0.6, label=trial_id[-12:])
    finished = {r["trial_id"] for r in trials.to_pylist() if not r["early_stopped"] and r["status"] == "ok"}
    front = compute_front({trial_id: curve for trial_id, curve in trial_curves.items() if trial_id in finished})
    axis.step(
        [s for s, _, _ in front],
        [v for _, v, _ in front],
        where="post",
        color="black",
        label="front (trials that scored every image)",
    )
    axis.plot(
        selection["peak_steps"],
        selection["peak_score"],
        "o",
        mfc="none",
        mec="black",
        ms=10,
        label="best: its peak",
    )
    axis.plot(
        selection["chosen_steps"],
        selection["chosen_score"],
        "*",
        color="black",
        ms=12,
        label=f"best: chosen (within {selection['within']} {objective.unit})",
    )
    axis.set_xlabel("training steps per image (compute)")
    axis.set_ylabel(f"mean {objective.label} over images scored")
    if len(trial_curves) <= 12:
        axis.legend(fontsize=6)
    plots["score_vs_steps.png"] = _png(figure)
    return plots


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
