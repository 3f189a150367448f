"""How much does one Self2Self+ result move by chance, and which stabiliser steadies it?

Per noise kind (CBSD68 σ = 25, PolyU real noise), the first --images images as centre crops of
--side, the kind's paper p, λ_IQA 0 (the real IQA weights are not to be had offline), --seeds
seeds. Each (image, seed) is ONE training to the largest --steps, read out at each of --steps
with --passes passes in several ways at once, so every read-out shares the same trajectory:

- raw: the weights as they are (the paper);
- ema<decay>: a bias-corrected moving average of the weights (model/averaging.py) per --ema-decays;
- last<k>: the mean of the raw estimates of the last --window read-outs (the ensemble spread over
  the last checkpoints; with read-outs 100 steps apart, steps s-300..s), at k x the passes;
- and, at the final step, raw with --final-passes passes (the ensemble's own noise).

`--lr-decay F` trains with the learning rate falling over the last F of the steps (S2SConfig.lr_decay),
a stabiliser that needs trainings of its own: its rows join the same file, each paired with the held
training of the same image and seed (the two are the same trajectory until the decay starts), and
the summary adds a read-out `lr_decay<F>`: the decayed training's raw weights at the final step.

Why 96² crops and 800 steps by default: they are the protocol of the landscape and the warm-start
tables (benchmarks/results/landscape, bench_warm.json), so these spreads apply to those figures
directly; at 800 steps PolyU crops are past their first peak, while CBSD68 crops still climb
(~0.4 dB per 100 steps: docs/variance.md), which weighs against any average of recent weights.
fp32 because it is what `precision: auto` runs (bf16 is itself a decision this measure serves).
One training with its read-outs takes ~9 minutes of one core on an AVX2 CPU without native bf16
(0.47 s a step), so 16 images x 3 seeds is ~7 core-hours: it runs over several sessions, resumably.
The paper protocol (whole images, 4000-5000
steps, 500 passes) is a GPU's job: `--side 0 --steps ... --device cuda`.

Per kind and read-out the summary gives: seed spread (per image the standard deviation of the
final PSNR over seeds, then the root mean square over images), read-out jitter (per training the
consecutive read-out differences over the last half of training: mean |Δ| and their standard
deviation, RMS over trainings), ensemble noise (RMS of final PSNR at --passes minus at
--final-passes), mean final PSNR, and for each stabiliser the rule against raw
(benchmarks/common.py) and whether it halves the seed spread. And whether a seed's noise is shared
across images: every image trains with the same seed on a crop of the same size, so with the same
mask and dropout stream; `shared_seed_noise` is the mean correlation, between images, of their
read-out increments with the image's own mean over seeds taken out, and a permutation p (each
image's steps shuffled), and pooled over the kinds: the rule for the seeding (docs/variance.md),
by which the product now gives each image a seed of its own (it was clearly above 0 at 8 x 3).
This benchmark keeps training every image at the seed it names: that is the measurement.

    python benchmarks/bench_variance.py run --data-root ../shared/data --kinds cbsd68-25 &
    python benchmarks/bench_variance.py run --data-root ../shared/data --kinds polyu &
    python benchmarks/bench_variance.py summary
"""

import json
import math
import time
from pathlib import Path

import numpy as np
from common import KINDS, QUANTIZE, RAW, centre_crop, kinds_parser, paired_rule, rule_line, steps_list

from model.config import PAPER_DEFAULTS, S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.images import to_uint8
from s2s_sweep.metrics import calculate_psnr, calculate_ssim

RESULTS = Path("benchmarks/results")


def trajectory(noisy: np.ndarray, clean: np.ndarray, config: S2SConfig, steps: list[int], args) -> dict:
    """One training of `noisy` to max(steps), read out at each of `steps` in every way listed in the
    module docstring: {read-out: {"psnr": [...], "ssim": [...]}} and the final raw PSNR at --final-passes."""
    from model.averaging import WeightAverage
    from model.denoiser import fit_memory, infer, memory_budget, prepare, to_image, train

    height, width, _ = noisy.shape
    net, padded = prepare(noisy, config)
    plan = fit_memory(height, width, config, memory_budget(config, padded.device), padded.device.type)
    averages = {f"ema{decay}": WeightAverage(net, decay) for decay in args.ema_decays}
    window = f"last{args.window}"
    curves = {name: {"psnr": [], "ssim": []} for name in [RAW, *averages, window]}
    raw_estimates, final = [], {}

    def estimate(network, passes: int) -> np.ndarray:
        return to_image(infer(network, padded, config.replace(passes=passes), plan.tile).denoised, height, width)

    def score(name: str, image: np.ndarray) -> None:
        pixels = to_uint8(image, QUANTIZE)
        curves[name]["psnr"].append(calculate_psnr(pixels, clean))
        curves[name]["ssim"].append(calculate_ssim(pixels, clean))

    def read_out(step: int) -> None:
        raw_estimates.append(estimate(net, args.passes))
        score(RAW, raw_estimates[-1])
        for name, average in averages.items():
            score(name, estimate(average.network(net), args.passes))
        score(window, np.mean(raw_estimates[-args.window :], axis=0))
        if step == steps[-1]:
            final["psnr"] = calculate_psnr(to_uint8(estimate(net, args.final_passes), QUANTIZE), clean)

    train(
        net,
        padded,
        height,
        width,
        config.replace(steps=steps[-1]),
        plan,
        checkpoints=set(steps),
        on_checkpoint=read_out,
        averages=list(averages.values()),
    )
    return {"curves": curves, "final_passes_psnr": final["psnr"]}


def run(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    rows = read_pieces(args.pieces)
    steps = steps_list(args.steps)
    protocol = {
        "side": args.side,
        "steps": steps,
        "passes": args.passes,
        "final_passes": args.final_passes,
        "window": args.window,
        "precision": args.precision,
    }
    for row in rows:  # a piece of another protocol must not join the file (lr_decay: a read-out of the same one)
        if {key: row[key] for key in protocol} != protocol:
            raise SystemExit(
                f"{args.pieces}: holds pieces of { ({key: row[key] for key in protocol}) }, not {protocol}; use those "
                "settings or another --pieces"
            )
    done = {(row["dataset"], row["image_id"], row["seed"]) for row in rows if decay_of(row) == args.lr_decay}
    for kind in args.kinds:
        dataset = open_dataset(kind, args.data_root)
        config = S2SConfig(
            p=PAPER_DEFAULTS[kind.split("-")[0]]["p"],
            lambda_iqa=0.0,
            lr_decay=args.lr_decay,
            precision=args.precision,
            device=args.device,
        )
        ids = dataset.ids[: args.images]
        # two seeds of each image first, image by image, then the further seeds: a partial file already gives a spread
        # per image
        order = [(seed, image_id) for image_id in ids for seed in range(min(2, args.seeds))] + [
            (seed, image_id) for seed in range(2, args.seeds) for image_id in ids
        ]
        todo = [(seed, image_id) for seed, image_id in order if (kind, image_id, seed) not in done]
        started = time.perf_counter()
        for index, (seed, image_id) in enumerate(todo):
            noisy, clean = (centre_crop(image, args.side) for image in dataset.load(image_id))
            began = time.perf_counter()
            result = trajectory(noisy, clean, config.replace(seed=seed), steps, args)
            row = {
                "dataset": kind,
                "image_id": image_id,
                "seed": seed,
                "steps": steps,
                **result,
                "noisy_psnr": calculate_psnr(noisy, clean),
                "side": args.side,
                "p": config.p,
                "passes": args.passes,
                "final_passes": args.final_passes,
                "window": args.window,
                "precision": args.precision,
                "lr_decay": args.lr_decay,
                "device": args.device,
                "seconds": time.perf_counter() - began,
            }
            pieces = (
                Path(args.pieces) / f"bench_variance_{kind}.jsonl"
            )  # a file per kind: one process per kind appends to it
            pieces.parent.mkdir(parents=True, exist_ok=True)
            with pieces.open("a") as file:
                file.write(json.dumps(row) + "\n")
            elapsed = time.perf_counter() - started
            eta = elapsed / (index + 1) * (len(todo) - index - 1)
            finals = " ".join(f"{name} {curve['psnr'][-1]:.2f}" for name, curve in result["curves"].items())
            print(
                f"[{index + 1}/{len(todo)}, ETA {eta / 60:.0f} min] {kind} {image_id} seed {seed}: {finals} dB "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )


def read_pieces(folder: str) -> list[dict]:
    """Every training recorded so far, of every kind."""
    return [
        json.loads(line)
        for path in sorted(Path(folder).glob("bench_variance_*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def decay_of(row: dict) -> float:
    """The row's lr_decay (rows written before the option trained with a held rate)."""
    return row.get("lr_decay", 0.0)


def with_decayed(held: list[dict], decayed: list[dict], name: str) -> list[dict]:
    """The held trainings that have a decayed partner (same image and seed), each with a second curve `name`:
    the partner's raw read-outs; summarise_kind then pairs the two like any other read-out."""
    partners = {(row["image_id"], row["seed"]): row for row in decayed}
    return [
        {**row, "curves": {RAW: row["curves"][RAW], name: partners[row["image_id"], row["seed"]]["curves"][RAW]}}
        for row in held
        if (row["image_id"], row["seed"]) in partners
    ]


def rms(values) -> float:
    values = [value for value in values if not math.isnan(value)]
    return float(np.sqrt(np.mean(np.square(values)))) if values else math.nan


def shared_seed_noise(curves: np.ndarray, permutations: int = 2000, seed: int = 0) -> dict:
    """curves (images, seeds, read-outs): the mean correlation between images of the same seed's read-out
    increments, each image's mean over its seeds taken out, the permutation p of a value that high, and the
    null sample (each image's steps shuffled) that p comes from, for pooling kinds."""
    increments = np.diff(curves, axis=2)
    residuals = increments - increments.mean(axis=1, keepdims=True)  # what the seed adds to the image's curve

    def mean_correlation(values: np.ndarray) -> float:
        upper = np.triu_indices(values.shape[0], 1)
        return float(np.mean([np.corrcoef(values[:, seed])[upper].mean() for seed in range(values.shape[1])]))

    observed = mean_correlation(residuals)
    rng = np.random.default_rng(seed)
    null = np.array(
        [
            mean_correlation(np.stack([image[:, rng.permutation(image.shape[1])] for image in residuals]))
            for _ in range(permutations)
        ]
    )
    return {"mean_r": observed, "p": float(np.mean(null >= observed)), "null": null}


def pooled_seed_noise(per_kind: list[dict]) -> dict:
    """The kinds' shared seed noise pooled (docs/variance.md, the rule for the seeding): the mean of their
    mean r, against the mean of their null samples (independent: each kind's drawn with its own seed)."""
    observed = float(np.mean([entry["mean_r"] for entry in per_kind]))
    null = np.mean([entry["null"] for entry in per_kind], axis=0)
    return {"mean_r": observed, "p": float(np.mean(null >= observed)), "kinds": len(per_kind)}


def summarise_kind(rows: list[dict]) -> dict:
    """The measures of the module docstring for one kind, over the images that have >= 2 seeds."""
    by_image: dict[str, list[dict]] = {}
    for row in rows:
        by_image.setdefault(row["image_id"], []).append(row)
    by_image = {image: runs for image, runs in by_image.items() if len(runs) >= 2}
    if not by_image:
        return {}
    images = sorted(by_image)
    seeds = min(len(runs) for runs in by_image.values())
    by_image = {
        image: sorted(by_image[image], key=lambda row: row["seed"])[:seeds] for image in images
    }  # the same seed count per image
    steps = rows[0]["steps"]
    last_half = [index for index, step in enumerate(steps) if step >= steps[-1] / 2]
    readouts = list(rows[0]["curves"])
    result = {"images": len(images), "seeds": seeds, "steps": steps, "image_ids": images, "readouts": {}}
    for name in readouts:
        finals = {
            image: [run["curves"][name]["psnr"][-1] for run in by_image[image]] for image in images
        }  # (images, seeds)
        jumps = [
            np.diff(np.array(run["curves"][name]["psnr"])[last_half]) for image in images for run in by_image[image]
        ]
        mean_curve = np.mean([run["curves"][name]["psnr"] for image in images for run in by_image[image]], axis=0)
        result["readouts"][name] = {
            "seed_spread_db": rms(np.std(finals[image], ddof=1) for image in images),
            "seed_spread_per_image_db": {image: float(np.std(finals[image], ddof=1)) for image in images},
            "jitter_mean_abs_db": rms(float(np.mean(np.abs(jump))) for jump in jumps),
            "jitter_sd_db": rms(float(np.std(jump, ddof=1)) for jump in jumps if len(jump) > 1),
            "jitter_max_abs_db": float(max(np.max(np.abs(jump)) for jump in jumps)),
            "final_psnr": float(np.mean([np.mean(finals[image]) for image in images])),
            "final_psnr_per_image": {image: float(np.mean(finals[image])) for image in images},
            "mean_curve": mean_curve.tolist(),
            "final_ssim": float(
                np.mean([run["curves"][name]["ssim"][-1] for image in images for run in by_image[image]])
            ),
        }
    raw = result["readouts"][RAW]
    result["ensemble_noise_db"] = rms(
        run["curves"][RAW]["psnr"][-1] - run["final_passes_psnr"] for image in images for run in by_image[image]
    )
    result["passes"], result["final_passes"] = rows[0]["passes"], rows[0]["final_passes"]
    result["shared_seed_noise"] = shared_seed_noise(
        np.array([[run["curves"][RAW]["psnr"] for run in by_image[image]] for image in images]),
        seed=sorted(KINDS).index(rows[0]["dataset"]),  # the kinds' null samples independent, for pooling
    )
    for name in readouts:
        if name == RAW:
            continue
        entry = result["readouts"][name]
        candidate = [entry["final_psnr_per_image"][image] for image in images]
        reference = [raw["final_psnr_per_image"][image] for image in images]
        entry["rule_vs_raw"] = paired_rule(candidate, reference)
        entry["halves_seed_spread"] = bool(entry["seed_spread_db"] <= raw["seed_spread_db"] / 2)
    return result


def summary(args) -> None:
    rows = read_pieces(args.pieces)
    table, decays = {}, sorted({decay_of(row) for row in rows} - {0.0})
    for kind in KINDS:
        held = [row for row in rows if row["dataset"] == kind and decay_of(row) == 0.0]
        entry = summarise_kind(held)
        for decay in decays:
            name = f"lr_decay{decay:g}"
            paired = summarise_kind(
                with_decayed(held, [r for r in rows if r["dataset"] == kind and decay_of(r) == decay], name)
            )
            if paired:  # over its own images and seeds, which may be fewer than the held read-outs'
                entry["readouts"][name] = {
                    **paired["readouts"][name],
                    "images": paired["images"],
                    "seeds": paired["seeds"],
                    # what "halves" compared with: the held rate's spread over the same images and seeds
                    "raw_seed_spread_db": paired["readouts"][RAW]["seed_spread_db"],
                }
        if entry:
            table[kind] = entry
    for kind, entry in table.items():
        print(
            f"\n{KINDS[kind]}: {entry['images']} images x {entry['seeds']} seeds, read out at {entry['steps']}; "
            f"ensemble noise ({entry['passes']} vs {entry['final_passes']} passes, RMS) "
            f"{entry['ensemble_noise_db']:.3f} dB; a seed's noise shared across images: mean r "
            f"{entry['shared_seed_noise']['mean_r']:+.2f} (permutation p {entry['shared_seed_noise']['p']:.3f})"
        )
        print(
            f"  {'read-out':<10} {'seed spread':>11} {'jitter |Δ|':>10} {'jitter sd':>9} {'max |Δ|':>8} {'PSNR':>7}  "
            "rule against raw"
        )
        for name, r in entry["readouts"].items():
            if "images" in r:
                name = f"{name} ({r['images']}x{r['seeds']})"
            verdict = (
                ""
                if name == RAW
                else rule_line(r["rule_vs_raw"])
                + ("; halves the spread" if r["halves_seed_spread"] else "; does not halve the spread")
                + (f" (raw on these: {r['raw_seed_spread_db']:.3f})" if "raw_seed_spread_db" in r else "")
            )
            print(
                f"  {name:<10} {r['seed_spread_db']:>11.3f} {r['jitter_mean_abs_db']:>10.3f} {r['jitter_sd_db']:>9.3f} "
                f"{r['jitter_max_abs_db']:>8.2f} {r['final_psnr']:>7.2f}  {verdict}"
            )
    adopted = [
        name
        for name in (next(iter(table.values()))["readouts"] if table else [])
        if name != RAW
        and len(table) == len(KINDS)
        and all(
            name in e["readouts"]
            and e["readouts"][name]["rule_vs_raw"]["passes"]
            and e["readouts"][name]["halves_seed_spread"]
            for e in table.values()
        )
    ]
    print(f"\nstabilisers that halve the seed spread and pass the rule on every kind: {', '.join(adopted) or 'none'}")
    pooled = pooled_seed_noise([entry["shared_seed_noise"] for entry in table.values()]) if table else {}
    if pooled:  # the rule for the seeding reads it at 3 seeds (stated before the third seed: docs/variance.md)
        shown = pooled["mean_r"] > 0 and pooled["p"] < 0.05
        ready = len(table) == len(KINDS) and all(entry["seeds"] >= 3 for entry in table.values())
        if ready:
            verdict = "shown; the rule for the seeding: a seed per image" if shown else "not shown; one seed per run"
        else:
            verdict = ("shown" if shown else "not shown") + " (the seeding rule reads it at 3 seeds per kind)"
        print(
            f"a seed's noise shared across images, {pooled['kinds']} kinds pooled: mean r {pooled['mean_r']:+.2f}, "
            f"permutation p {pooled['p']:.3f}: {verdict}"
        )
    for entry in table.values():
        entry["shared_seed_noise"].pop("null")
    Path(args.json).write_text(
        json.dumps({"kinds": table, "adoptable": adopted, "shared_seed_noise_pooled": pooled}, indent=2)
    )
    print(f"wrote {args.json}")


def main() -> None:
    parser = kinds_parser(__doc__, images=8, side=96)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", default="100,200,300,400,500,600,700,800")
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--final-passes", type=int, default=500)
    parser.add_argument("--ema-decays", type=float, nargs="*", default=[0.99, 0.995])
    parser.add_argument("--window", type=int, default=4, help="read-outs averaged by the last<k> read-out")
    parser.add_argument(
        "--lr-decay", type=float, default=0.0, help="train with S2SConfig.lr_decay (0: the held rate of the paper)"
    )
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"], help="fp32: the product's default (precision auto)"
    )
    parser.add_argument(
        "--pieces", default=str(RESULTS), help="folder of the per-kind files of pieces, bench_variance_KIND.jsonl"
    )
    parser.add_argument("--json", default=str(RESULTS / "bench_variance.json"))
    args = parser.parse_args()
    run(args) if args.command == "run" else summary(args)


if __name__ == "__main__":
    main()
