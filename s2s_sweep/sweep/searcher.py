"""The search: Optuna's TPE through Tune's OptunaSearch, never a configuration twice, with ASHA on images done."""

from dataclasses import dataclass

import numpy as np
import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from s2s_sweep.configs import SearchSpace
from s2s_sweep.objectives import SCORE
from s2s_sweep.sweep.space import config_grid, paper_point


@dataclass(frozen=True)
class DefineSpace:
    """Optuna define-by-run space: p (stepped or log/uniform), λ_IQA log-uniform with 0 as its
    own choice. A class, not a closure, so Tune can pickle the searcher to restore a sweep."""

    space: SearchSpace

    def __call__(self, trial) -> None:
        if len(self.space.inits) > 1:
            trial.suggest_categorical("init", list(self.space.inits))
        p = self.space.search["p"]
        trial.suggest_float("p", p.low, p.high, step=p.step, log=p.log)
        lam = self.space.search["lambda_iqa"]
        if lam.fixed_zero:
            return
        use_iqa = trial.suggest_categorical("use_iqa", [True, False]) if lam.allow_zero else True
        if use_iqa:
            trial.suggest_float("lambda_iqa", lam.low, lam.high, step=lam.step, log=lam.log)


def config_key(params: dict) -> tuple:
    return tuple(
        sorted((name, round(value, 9) if isinstance(value, float) else value) for name, value in params.items())
    )


class UniqueConfigSearch(OptunaSearch):
    """Tune's OptunaSearch that never trains a configuration twice. A trial's result is a
    function of its configuration alone (same seed, images and checkpoints), so a suggestion
    equal to an earlier trial's is withdrawn (told to Optuna as failed, which its samplers
    ignore) and asked again; after FRESH_ASKS repeats, an unvisited point of the space's grid
    is taken instead. A discrete space with no unvisited point left ends the search."""

    FRESH_ASKS = 10

    def __init__(self, *args, grid: list[dict] | None, seed: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.grid = grid
        self.rng = np.random.default_rng(seed)

    def suggest(self, trial_id: str):
        config = self.suggest_unvisited(trial_id)
        if isinstance(
            config, dict
        ):  # a stepped p as written (0.9), not as Optuna computes it (0.3 + 12 * 0.05 = 0.9000000000000001)
            config["p"] = round(config["p"], 10)
        return config

    def suggest_unvisited(self, trial_id: str):
        for _ in range(self.FRESH_ASKS):
            config = super().suggest(trial_id)
            if config_key(self._ot_trials[trial_id].params) not in self.visited(trial_id):
                return config
            self.withdraw(trial_id)
        unvisited = [point for point in self.grid or [] if config_key(point) not in self.visited(trial_id)]
        if not unvisited:
            print(
                f"sweep: every configuration of the space{'' if self.grid else ' met so far'} has been tried; no more "
                "trials",
                flush=True,
            )
            return Searcher.FINISHED
        self._ot_study.enqueue_trial(unvisited[self.rng.integers(len(unvisited))])
        return super().suggest(trial_id)

    def visited(self, trial_id: str) -> set[tuple]:
        current = self._ot_trials.get(trial_id)
        return {
            config_key(trial.params)
            for trial in self._ot_study.get_trials(deepcopy=False)
            if not trial.user_attrs.get("withdrawn") and (current is None or trial.number != current.number)
        }

    def withdraw(self, trial_id: str) -> None:
        repeat = self._ot_trials.pop(trial_id)
        repeat.set_user_attr("withdrawn", True)
        self._ot_study.tell(repeat, state=optuna.trial.TrialState.FAIL)


# Random draws before TPE models the results. Optuna's default, 10, made TPE random search within
# a 7-trial budget; on the landscape replay (benchmarks/bench_sweep.py) 3 matched or beat it on
# both noise kinds (median regret at 30% of the grid's compute 0.00 dB; PolyU: random 0.11 dB).
TPE_STARTUP_TRIALS = 3


def tpe_sampler(seed: int, startup_trials: int = TPE_STARTUP_TRIALS):
    """Optuna's TPE, modelling p and λ_IQA jointly; its first `startup_trials` trials (the paper point
    among them) are drawn at random."""
    return optuna.samplers.TPESampler(n_startup_trials=startup_trials, multivariate=True, group=True, seed=seed)


def make_tuner(
    trainable,
    space: SearchSpace,
    trials: int,
    subset_size: int,
    seed: int,
    run_config: tune.RunConfig,
    sampler=None,
    concurrency: int | None = None,
) -> tune.Tuner:
    """The search: UniqueConfigSearch (Optuna, the paper point first; TPE unless `sampler` is
    given) and ASHA on images done, `trials` configurations at most."""
    searcher = UniqueConfigSearch(
        space=DefineSpace(space),
        metric=SCORE,
        mode="max",
        points_to_evaluate=[paper_point(space)],
        sampler=sampler or tpe_sampler(seed),
        grid=config_grid(space),
        seed=seed,
    )
    scheduler = ASHAScheduler(
        time_attr="images_done",
        max_t=subset_size,
        grace_period=min(space.grace_images, subset_size),  # a subset smaller than the grace: no early stop
        reduction_factor=space.reduction_factor,
    )
    tune_config = tune.TuneConfig(
        metric=SCORE,
        mode="max",
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=trials,
        max_concurrent_trials=concurrency or space.concurrency,
        reuse_actors=True,  # a new trial starts in a finished one's process: no second import of torch and the rest
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
