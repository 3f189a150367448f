"""Per-dataset hyperparameter search with Ray Tune + Optuna (TPE) + ASHA, recorded in MLflow and Parquet.

    python -m s2s_sweep.run demo --sweep [--trials N] [--space FILE.yaml] [--sweep-only]

A trial is one (p, λ_IQA) configuration scored on a fixed, seeded subset of the dataset's
images by the space file's `search.objective` (PSNR unless it says otherwise; s2s_sweep/objectives/).
It reports the running mean score after each image, so ASHA (resource attribute `images_done`)
stops poor configurations after one or two images.

Steps are the fidelity axis, not a separate dimension: each image is trained once up to
the largest step budget of the search space, and at every step checkpoint the cheap
ensemble (`search.passes` passes) is scored. One training thus yields the whole
score-vs-steps curve, and a trial's steps are the checkpoint where its mean curve peaks;
no configuration is retrained for a smaller budget. With `init: [cold, warm]` under `search:`
the start is a dimension too: a warm trial first trains a seed network on the dataset's first
`warm_images` images (the largest step checkpoint each, its p and λ_IQA), once per trial, and
its curve is then the warm images' PSNR against `warm_steps`. Nor twice: a trial's result depends on
its configuration alone, so the searcher never suggests one already tried (UniqueConfigSearch),
and a search over a discrete space ends when every configuration has been tried.

What a trial evaluates is passed in: TrainImages trains (the sweep), ReplayLandscape looks the
curves up in a tabular landscape (benchmarks/bench_sweep.py replays searches on it); the search
around it (make_tuner) is the same.

The subset's `subset.heldout` images are kept out of the search: the best is validated on them
against the paper's configuration (validation.py), and `--config best` runs it only where that
shows it at least as good.

Outputs: OUT/DATASET/sweeps/SWEEP_ID/{tune/ (Tune's state, for restore), trials, curves and
heldout Parquet tables, best_config.yaml, sweep.json}, and OUT/DATASET/best_config.yaml for
`run DATASET --config best`. MLflow: a parent run per sweep, a child run per trial (Tune's
MLflowLoggerCallback), the best configuration and plots as artifacts of the parent.
"""

from s2s_sweep.sweep.driver import SweepOptions, SweepOutcome, remove_duplicate_trial_runs, run_sweep, search
from s2s_sweep.sweep.replay import LANDSCAPE, ReplayLandscape, read_landscape
from s2s_sweep.sweep.searcher import (
    TPE_STARTUP_TRIALS,
    DefineSpace,
    UniqueConfigSearch,
    config_key,
    make_tuner,
    tpe_sampler,
)
from s2s_sweep.sweep.selection import best_config
from s2s_sweep.sweep.space import (
    config_grid,
    paper_point,
    range_values,
    step_checkpoints,
    subset_ids,
    subset_split,
    trial_lambda,
)
from s2s_sweep.sweep.tables import CURVE_SCHEMA, sweep_tables
from s2s_sweep.sweep.trial import TrainImages, image_curves, make_trainable, sweep_inputs, sweep_trial
from s2s_sweep.sweep.validation import paired_verdict, validate_best

__all__ = [
    "CURVE_SCHEMA",
    "DefineSpace",
    "LANDSCAPE",
    "ReplayLandscape",
    "SweepOptions",
    "SweepOutcome",
    "TPE_STARTUP_TRIALS",
    "TrainImages",
    "UniqueConfigSearch",
    "best_config",
    "config_grid",
    "config_key",
    "image_curves",
    "make_trainable",
    "make_tuner",
    "paper_point",
    "range_values",
    "read_landscape",
    "remove_duplicate_trial_runs",
    "run_sweep",
    "search",
    "step_checkpoints",
    "subset_ids",
    "subset_split",
    "paired_verdict",
    "validate_best",
    "sweep_inputs",
    "sweep_tables",
    "sweep_trial",
    "tpe_sampler",
    "trial_lambda",
]
