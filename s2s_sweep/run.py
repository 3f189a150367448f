"""Denoise and evaluate a whole dataset on Ray, one independent Self2Self+ run per image.

    python -m s2s_sweep.run demo                                  # a laptop: starts Ray locally
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python -m s2s_sweep.run sidd
    python -m s2s_sweep.run cbsd68-25 --config best --set passes=200 --limit 8 --out s3://bucket/s2s
    python -m s2s_sweep.run cbsd68-25 --method cbm3d              # a baseline, same runner, table and MLflow experiment

With no flags a dataset runs with its paper configuration (search_spaces/<family>.yaml).
Outputs: OUT/DATASET/RUN_ID/{images/*.png, config.yaml, run.json, results/dataset=DATASET/*.parquet};
MLflow: experiment s2s-sweep/DATASET.
"""

import argparse
import os
import sys
import traceback
from pathlib import Path

import yaml

from model.iqa_weights import ensure_iqa_weights
from s2s_sweep.configs import (
    FLAG_FIELDS,
    ConfigError,
    load_space,
    read_yaml,
    resolve_run_config,
    space_file_for,
)
from s2s_sweep.datasets import open_dataset
from s2s_sweep.errors import (
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_IMAGES_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STATUSES,
    EXIT_STORE_LOST,
    EXIT_TERMINATED,
    USER_ERRORS,
    NoTrialFinished,
    Terminated,
    raise_on_sigterm,
    stop_request,
)
from s2s_sweep.methods import DEFAULT_METHOD, METHODS, REGISTRY, Method
from s2s_sweep.run_settings import join, split
from s2s_sweep.runner import RunOptions, run_dataset
from s2s_sweep.store import DEFAULT_FALLBACK, OutputStore, StoreLost
from s2s_sweep.uris import redact, remove_private_profiles


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m s2s_sweep.run",
        description=__doc__,
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help="cbsd68-15|25|50, sidd, sidd-benchmark, polyu, demo, or folder:PATH")
    parser.add_argument(
        "--method",
        choices=METHODS,
        help=f"{DEFAULT_METHOD} (default; a resumed run keeps its own), or another of s2s_sweep/methods: "
        f"{', '.join(METHODS[1:])}",
    )
    parser.add_argument("--config", default="paper", help="paper (default), best (saved by a sweep) or FILE.yaml")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="override settings, e.g. --set p=0.5 steps=2000"
    )
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--images", help="only these image ids, comma-separated")
    parser.add_argument("--out", default="outputs", help="output folder or filesystem URI (default %(default)s)")
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue this run: images already recorded are skipped, and MLflow catches up",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="with --resume: also rerun the failed images, replacing their rows"
    )
    parser.add_argument("--cpus-per-image", type=float, default=1.0, help="CPUs (and torch threads) per task")
    parser.add_argument(
        "--gpus-per-image",
        type=float,
        help="GPUs per task, fractions pack runs on a GPU (default: 1 when the cluster has GPUs, else 0)",
    )
    parser.add_argument(
        "--mlflow-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite under --out)"
    )
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)")
    parser.add_argument(
        "--data-root", help="benchmark data root (default: $S2S_DATA_ROOT, else ~/.cache/s2s-sweep/data)"
    )
    parser.add_argument("--clean-dir", help="clean references for folder:PATH, matched by file name")
    parser.add_argument("--device", default="auto", help="device inside each task (default %(default)s)")
    parser.add_argument("--iqa-weights", help="TORCH_HOME-style folder with the IQA weights, on every node")
    parser.add_argument(
        "--flush-seconds", type=float, default=30.0, help="write results to Parquet at least this often"
    )
    parser.add_argument(
        "--store-patience",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long finished images wait in memory for an output store that is down (default %(default)s)",
    )
    parser.add_argument(
        "--fallback",
        default=str(DEFAULT_FALLBACK),
        metavar="DIR",
        help="local folder for them when it stays down longer; --resume uploads them (default %(default)s)",
    )
    sweep = parser.add_argument_group("hyperparameter search (Ray Tune + Optuna TPE + ASHA)")
    sweep.add_argument(
        "--sweep",
        action="store_true",
        help="search p, steps and λ_IQA on a subset, save the best, then run the dataset with it",
    )
    sweep.add_argument(
        "--sweep-only", action="store_true", help="stop after the search (the best is saved for --config best)"
    )
    sweep.add_argument("--trials", type=int, help="trial budget (default: the search-space file's)")
    sweep.add_argument("--space", help="search-space file (default: search_spaces/<family>.yaml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    try:
        return run(args)
    except (*USER_ERRORS, StoreLost, NoTrialFinished) as error:  # one line, no traceback
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return (
            EXIT_STORE_LOST
            if isinstance(error, StoreLost)
            else EXIT_IMAGES_FAILED
            if isinstance(error, NoTrialFinished)
            else EXIT_BAD_INPUT
        )
    except (KeyboardInterrupt, Terminated, Exception) as error:
        stop = stop_request(error)
        if stop is not None:
            print(
                f"{'interrupted' if isinstance(stop, KeyboardInterrupt) else 'terminated'}: finished work is recorded; "
                "continue with --resume ID",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print("internal error: please report it with the traceback above", file=sys.stderr)
        return EXIT_BUG


def run(args: argparse.Namespace) -> int:
    if args.retry_failed and not args.resume:
        raise ConfigError("--retry-failed: expected with --resume RUN_ID (the run whose failed images to rerun)")
    if args.store_patience < 0:
        raise ConfigError(f"--store-patience {args.store_patience}: expected seconds >= 0")
    dataset = open_dataset(args.dataset, args.data_root, args.clean_dir)
    dataset = dataset.select(args.limit, args.images.split(",") if args.images else None)
    store = OutputStore(args.out)
    best = f"{dataset.key}/best_config.yaml"
    saved = store.read_text(f"{dataset.key}/{args.resume}/config.yaml") if args.resume else None
    saved_method = Method.from_settings(yaml.safe_load(saved)) if saved else None
    method = args.method or (saved_method.name if saved_method else DEFAULT_METHOD)  # resuming: the run's own method
    check_method_arguments(args, method)
    if saved_method and args.config == "paper" and not args.set:  # resuming: the run's own settings
        values = {k: v for k, v in join(saved_method.config, saved_method.run).items() if k not in FLAG_FIELDS}
    else:
        values = resolve_run_config(
            args.dataset,
            args.config,
            args.set,
            (store.path(best), store.read_text(best) if args.config == "best" else None),
        )
    try:
        config, run_settings = split({**values, "device": args.device, "iqa_weights": args.iqa_weights})
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if (
        config.lambda_iqa > 0 and "lambda_iqa" in REGISTRY[method].settable and not (args.sweep or args.sweep_only)
    ):  # a sweep checks its own space
        ensure_iqa_weights(config.iqa_weights)  # on the driver: a clear error before any task starts
    source = args.config
    if args.sweep or args.sweep_only:
        from s2s_sweep.sweep import (
            SweepOptions,
            run_sweep,
        )  # Tune and Optuna load only for a sweep: a second off every other start

        space = load_space(args.space or space_file_for(args.dataset))
        sweep_options = SweepOptions(
            out=store.location,
            sweep_id=args.resume,
            resume=bool(args.resume),
            trials=args.trials,
            mlflow_uri=args.mlflow_uri,
            address=args.address,
            seed=config.seed,
        )
        sweep = run_sweep(dataset, space, config, sweep_options, run_settings)
        if args.sweep_only:
            return EXIT_OK
        config, run_settings = split({**join(config, run_settings), **sweep.to_run})
        source = f"sweep {sweep.sweep_id}" if sweep.note is None else f"paper (sweep {sweep.sweep_id}'s best not shown)"
        if sweep.note:
            print(sweep.note, flush=True)
    options = RunOptions(
        out=store.location,
        run_id=None if args.sweep else args.resume,
        resume=bool(args.resume) and not args.sweep,
        retry_failed=args.retry_failed,
        cpus_per_image=args.cpus_per_image,
        gpus_per_image=args.gpus_per_image,
        mlflow_uri=args.mlflow_uri,
        address=args.address,
        flush_seconds=args.flush_seconds,
        store_patience_seconds=args.store_patience,
        fallback=args.fallback,
        extra_params={"config_source": source},
    )
    return run_dataset(dataset, Method(method, config, run_settings), options).exit_status


def check_method_arguments(args: argparse.Namespace, method: str) -> None:
    """The sweep and --config hold the default method's (S2S+'s) settings; another method takes only
    the settings its `settable` names (s2s_sweep.methods). A run's config.yaml given as --config
    must be of the method asked for."""
    recorded = config_file_method(args.config)
    if recorded and recorded != method:
        raise ConfigError(
            f"--config {args.config}: holds the settings of a {recorded} run, not of {REGISTRY[method].label}; run it "
            f"with --method {recorded}"
        )
    if method == DEFAULT_METHOD:
        return
    if args.sweep or args.sweep_only:
        raise ConfigError(
            f"--method {method}: --sweep searches S2S+'s settings; {REGISTRY[method].label} has none to search"
        )
    if args.config != "paper":
        raise ConfigError(f"--method {method}: --config {args.config} holds S2S+ settings; {method} takes none")
    settable = REGISTRY[method].settable
    other = [item for item in args.set if item.split("=", 1)[0] not in settable]
    if other:
        raise ConfigError(
            f"--set {' '.join(other)}: --method {method} takes only {' and '.join(key + '=' for key in settable)}"
        )


def config_file_method(config: str) -> str | None:
    """The method a run's config.yaml given as --config records (None for paper, best or a plain file)."""
    path = Path(config)
    if config in ("paper", "best") or not path.is_file():
        return None
    content = read_yaml(path)
    return content.get("method") if isinstance(content, dict) else None


if __name__ == "__main__":
    status = main()
    if status in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        # Stopped: records are flushed and MLflow updated. Skip Ray's exit-time shutdown, which can
        # wait on the stopped run's tasks for many seconds (past `ray job stop`'s SIGKILL); the
        # cluster cancels a dead driver's tasks itself.
        sys.stdout.flush()
        sys.stderr.flush()
        remove_private_profiles()
        os._exit(status)
    sys.exit(status)
