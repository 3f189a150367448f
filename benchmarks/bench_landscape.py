"""The tabular landscape the sweep is replayed against (the convention of HPOBench / NAS-Bench).

Once, with the project's own training (model.denoiser.denoise_at_steps): for each noise kind
(CBSD68 σ = 25, PolyU real noise), its first --images images as centre crops of --side, every p
of 0.30..0.95 by 0.05, one training to the largest --steps per (image, p), read out at each of
--steps with --passes passes (s2s_sweep.sweep.TrainImages: what a sweep trial evaluates): PSNR, SSIM
and the no-reference held-out PSNR (s2s_sweep.metrics.calculate_heldout_psnr). λ_IQA 0 (the real
IQA weights are not to be had offline), bf16 (--precision; each image's p grid at one precision),
seed 0. Each (image, p) training appends its rows to the kind's Parquet file as soon as it is done
and a rerun skips what is there: run it in the background, in pieces, one process per kind or
several on one kind (--shard I/N: each takes every N-th p; writes are locked). `summary` reports
how well the held-out score ranks (p, steps) as PSNR does.

    python benchmarks/bench_landscape.py run --data-root ../shared/data --kinds cbsd68-25 &
    python benchmarks/bench_landscape.py run --data-root ../shared/data --kinds polyu &
    python benchmarks/bench_landscape.py summary

    duckdb -c "SELECT dataset, p, steps, avg(psnr) FROM 'benchmarks/results/landscape/*.parquet'
               GROUP BY ALL ORDER BY 4 DESC LIMIT 5"
"""

import fcntl
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from common import (
    KINDS,
    add_shard_option,
    centre_crop,
    kinds_parser,
    objective_spearman,
    spearman,
    steps_list,
    whole_grid,
)

from model.config import S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.metrics import calculate_psnr
from s2s_sweep.run_settings import RunSettings, join
from s2s_sweep.sweep import LANDSCAPE, TrainImages, read_landscape

P_GRID = [round(0.30 + 0.05 * index, 2) for index in range(14)]  # 0.30 .. 0.95
SPEARMAN_GOAL = 0.8  # the held-out score may drive a sweep where it ranks as PSNR does on both kinds


def curve_rows(
    kind: str, image_id: str, noisy: np.ndarray, clean: np.ndarray, config: S2SConfig, steps: list[int], passes: int
) -> list[dict]:
    """One training of `noisy` up to max(steps), evaluated as a sweep trial evaluates it (TrainImages):
    a row per read-out."""
    started = time.perf_counter()
    # seeding "run": every image at the seed it names (0), the protocol the committed table was built with
    evaluation = TrainImages([(image_id, noisy, clean)], [], join(config, RunSettings(seeding="run")), steps, passes)
    ((_, curves),) = evaluation.curves({"p": config.p, "lambda_iqa": config.lambda_iqa})
    seconds = time.perf_counter() - started
    fixed = {
        "dataset": kind,
        "image_id": image_id,
        "p": config.p,
        "noisy_psnr": calculate_psnr(noisy, clean),
        "side": noisy.shape[0],
        "passes": passes,
        "precision": config.precision,
        "device": config.device,
        "seed": config.seed,
        "seconds": seconds,
    }
    return [
        {**fixed, "steps": step, **{name: values[index] for name, values in curves.items()}}
        for index, step in enumerate(steps)
    ]


def check_protocol(table: pa.Table | None, image_id: str, settings: dict, path: Path) -> None:
    """A piece of another protocol must not join the table: side, passes and steps are the table's;
    precision is each image's own (an image's p grid is compared within itself, so one image may be
    fp32 beside another at bf16, and the summary says which)."""
    if table is None:
        return
    found = {name: pc.max(table[name]).as_py() for name in ("side", "passes", "steps")}
    image = table.filter(pc.equal(table["image_id"], image_id))
    if image.num_rows:
        found["precision"] = image["precision"][0].as_py()
    wanted = {name: settings[name] for name in found}
    if found != wanted:
        raise SystemExit(f"{path}: built with {found}, not {wanted} ({image_id}); use those settings or another --out")


@contextmanager
def locked_table(path: Path):
    """The kind's table as it is on disk now, held under a lock: processes sharing a kind (--shard)
    each append to the file the other wrote, never to a stale copy of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield pq.read_table(path) if path.exists() else None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    steps = steps_list(args.steps)
    settings = {"side": args.side, "passes": args.passes, "precision": args.precision, "steps": max(steps)}
    shard, shards = args.shard
    for kind in args.kinds:
        path = Path(args.out) / f"{kind}.parquet"
        dataset = open_dataset(kind, args.data_root)
        for image_id in dataset.ids[: args.images]:  # image by image: a partial table holds whole images
            with locked_table(path) as table:  # the shards' p are disjoint: what is done now stays theirs
                image_rows = None if table is None else table.filter(pc.equal(table["image_id"], image_id))
                done = set() if image_rows is None else set(image_rows["p"].to_pylist())
                todo = [p for p in P_GRID[shard::shards] if p not in done]
                if todo:
                    check_protocol(table, image_id, settings, path)
            if not todo:
                continue
            noisy, clean = (centre_crop(image, args.side) for image in dataset.load(image_id))
            for p in todo:
                config = S2SConfig(p=p, lambda_iqa=0.0, precision=args.precision, device=args.device, seed=0)
                rows = pa.Table.from_pylist(
                    curve_rows(kind, image_id, noisy, clean, config, steps, args.passes), schema=LANDSCAPE
                )
                with locked_table(path) as table:
                    table = rows if table is None else pa.concat_tables([table, rows])
                    pq.write_table(table, path.with_suffix(".tmp"))
                    path.with_suffix(".tmp").replace(path)  # a kill never leaves half a file
                best = max(rows.to_pylist(), key=lambda row: row["psnr"])
                print(
                    f"{kind} {image_id} p {p}: best {best['psnr']:.2f} dB at {best['steps']} "
                    f"({rows['seconds'][0].as_py():.0f} s)",
                    flush=True,
                )


def summary(args) -> None:
    """Per kind: how the held-out score ranks (p, steps) against PSNR, and what picking each
    image's configuration by it instead of by PSNR would cost."""
    frame = read_landscape(args.out).to_pandas()
    whole = whole_grid(frame, len(P_GRID))
    if not whole.all():  # a table still being built: its unfinished images would skew the means over images
        partial = sorted(set(frame.loc[~whole, "image_id"]))
        print(f"left out, not yet the whole p grid: {', '.join(partial)}")
    result = {}
    for kind, rows in frame[whole].groupby("dataset"):
        ranks = objective_spearman(rows)
        picks = {}
        for image_id, curve in rows.groupby("image_id"):
            chosen = curve.loc[curve["heldout_psnr"].idxmax()]
            picks[image_id] = {
                "p": float(chosen["p"]),
                "steps": int(chosen["steps"]),
                "loss_db": float(curve["psnr"].max() - chosen["psnr"]),
            }
        means = rows.groupby(["p", "steps"])[["psnr", "heldout_psnr"]].mean()
        best, by_score = (
            means["psnr"].idxmax(),
            means["heldout_psnr"].idxmax(),
        )  # as a sweep would pick: the mean over its images
        result[kind] = {
            "images": len(picks),
            "images_by_precision": rows.groupby("precision")["image_id"].nunique().to_dict(),
            "p_values": int(rows["p"].nunique()),
            "steps": sorted(map(int, rows["steps"].unique())),
            "noisy_psnr": float(rows.groupby("image_id")["noisy_psnr"].first().mean()),
            "best_mean": {"p": float(best[0]), "steps": int(best[1]), "psnr": float(means["psnr"].max())},
            "objective_spearman": ranks["mean"],
            "objective_spearman_min": ranks["min"],
            "objective_spearman_per_image": ranks["per_image"],
            "objective_spearman_of_means": spearman(means["psnr"], means["heldout_psnr"]),
            "pick_by_heldout": picks,
            "pick_by_mean_heldout": {
                "p": float(by_score[0]),
                "steps": int(by_score[1]),
                "loss_db": float(means["psnr"].max() - means["psnr"][by_score]),
            },
        }
        print(
            f"\n{KINDS.get(kind, kind)}: {len(picks)} images x {rows['p'].nunique()} p x {rows['steps'].nunique()} "
            f"read-outs ({', '.join(f'{n} at {name}' for name, n in result[kind]['images_by_precision'].items())}); "
            f"noisy {result[kind]['noisy_psnr']:.2f} dB"
        )
        print(f"  best mean: p {best[0]}, {best[1]} steps, {means['psnr'].max():.2f} dB")
        print(
            f"  held-out score vs PSNR, Spearman over (p, steps): mean over images {ranks['mean']:.3f}, worst "
            f"{ranks['min']:.3f}; "
            f"of the means over images {result[kind]['objective_spearman_of_means']:.3f}"
        )
        pick = result[kind]["pick_by_mean_heldout"]
        print(
            f"  chosen by the mean held-out score: p {pick['p']}, {pick['steps']} steps, {pick['loss_db']:.2f} dB of "
            "mean PSNR below the best mean"
        )
        for image_id, pick in picks.items():
            print(
                f"    {image_id}: ρ {ranks['per_image'][image_id]:.3f}; its best by the held-out score: p {pick['p']}, "
                f"{pick['steps']} steps, {pick['loss_db']:.2f} dB below its best PSNR"
            )
    # a family may sweep by the held-out score where it ranks as PSNR does (configs.parse_objective reads
    # the figure the family's space file records as search.agreement.heldout)
    usable = {kind: entry["objective_spearman"] >= SPEARMAN_GOAL for kind, entry in result.items()}
    print(f"\nheld-out score as a sweep objective (goal: mean Spearman per image >= {SPEARMAN_GOAL}):")
    for kind, entry in result.items():
        print(
            f"  {kind}: {'usable' if usable[kind] else 'not usable'}; search_spaces/{kind.split('-')[0]}.yaml "
            f"records agreement: {{heldout: {entry['objective_spearman']:.3f}}}"
        )
    Path(args.json).write_text(
        json.dumps({"kinds": result, "spearman_goal": SPEARMAN_GOAL, "objective_usable": usable}, indent=2)
    )
    print(f"wrote {args.json}")


def main() -> None:
    parser = kinds_parser(__doc__, images=6, side=96)
    parser.add_argument("--steps", default="100,200,300,400,500,600,700,800")
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--out", default="benchmarks/results/landscape", help="folder of the per-kind Parquet files")
    parser.add_argument("--json", default="benchmarks/results/bench_landscape.json")
    add_shard_option(parser, "p")
    args = parser.parse_args()
    run(args) if args.command == "run" else summary(args)


if __name__ == "__main__":
    main()
