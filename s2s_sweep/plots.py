"""The sweep's figures and the curves they draw: PSNR against p, steps and λ_IQA, and PSNR
against compute (each trial's mean curve, their front, the best's choice). Read by the sweep
when it ends and by the report from the Parquet tables; no Ray Tune, no Optuna here, so an
offline report loads neither.
"""

import io

import pyarrow as pa

METRIC = "mean_psnr"  # the trials table's score column: a trial's mean PSNR over its images at its last checkpoint


def mean_psnr_curves(curves: pa.Table, trial_ids: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Each trial's mean PSNR over its scored images at every step checkpoint: [(steps, dB), ...]."""
    frame = curves.to_pandas()
    frame = frame[(frame["metric"] == "psnr") & frame["trial_id"].isin(trial_ids)]
    means = frame.groupby(["trial_id", "steps"])["value"].mean()
    return {
        trial_id: [(int(steps), float(value)) for steps, value in means[trial_id].items()]
        for trial_id in trial_ids
        if trial_id in means.index
    }


def compute_front(curves: dict[str, list[tuple[int, float]]]) -> list[tuple[int, float, str]]:
    """The PSNR-vs-compute front: the (steps, mean PSNR, trial) points no other point beats
    with as few steps or fewer, in order of steps."""
    points = sorted(
        ((steps, psnr, trial_id) for trial_id, curve in curves.items() for steps, psnr in curve),
        key=lambda point: (point[0], -point[1]),
    )
    front = []
    for point in points:
        if not front or point[1] > front[-1][1]:
            front.append(point)
    return front


def sweep_plots(trials: pa.Table, curves: pa.Table, selection: dict) -> dict[str, bytes]:
    """PSNR against p, steps and λ_IQA; and PSNR against compute: each trial's mean PSNR-vs-steps
    curve, the front of all their points, the best's peak and the point chosen (`best_config`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in trials.to_pylist() if r[METRIC] is not None]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for axis, key in zip(axes, ("p", "steps", "lambda_iqa"), strict=True):
        colours = ["tab:blue" if not r["early_stopped"] else "tab:gray" for r in rows]
        axis.scatter([r[key] for r in rows], [r[METRIC] for r in rows], c=colours)
        axis.set_xlabel(key + (" (0 drawn at the left edge)" if key == "lambda_iqa" else ""))
        axis.set_ylabel("mean PSNR (dB)")
        if key == "lambda_iqa" and any(r[key] > 0 for r in rows):
            axis.set_xscale("symlog", linthresh=min(r[key] for r in rows if r[key] > 0))
    figure.suptitle("trials (grey: stopped early)")
    plots = {"psnr_vs_params.png": _png(figure)}

    figure, axis = plt.subplots(figsize=(6, 4), constrained_layout=True)
    mean_curves = mean_psnr_curves(curves, sorted(set(curves["trial_id"].to_pylist())))
    for trial_id, curve in mean_curves.items():
        axis.plot(*zip(*curve, strict=True), marker=".", alpha=0.6, label=trial_id[-12:])
    finished = {r["trial_id"] for r in trials.to_pylist() if not r["early_stopped"] and r["status"] == "ok"}
    front = compute_front({trial_id: curve for trial_id, curve in mean_curves.items() if trial_id in finished})
    axis.step(
        [s for s, _, _ in front],
        [v for _, v, _ in front],
        where="post",
        color="black",
        label="front (trials that scored every image)",
    )
    axis.plot(
        selection["peak_steps"],
        selection["peak_mean_psnr"],
        "o",
        mfc="none",
        mec="black",
        ms=10,
        label="best: its peak",
    )
    axis.plot(
        selection["chosen_steps"],
        selection["chosen_mean_psnr"],
        "*",
        color="black",
        ms=12,
        label=f"best: chosen (within {selection['within_db']} dB)",
    )
    axis.set_xlabel("training steps per image (compute)")
    axis.set_ylabel("mean PSNR over images scored (dB)")
    if len(mean_curves) <= 12:
        axis.legend(fontsize=6)
    plots["psnr_vs_steps.png"] = _png(figure)
    return plots


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
