"""Large images: is crop training as good as whole-image training, and what do big photos cost?

(a) quality: on 256x256 centre crops of CBSD68 σ = 25 and of PolyU real noise (where both
    modes fit), whole-image training against training on batches of random crops with the
    same pixels per step (--crops "128x4" = 4 crops of 128x128 = 256x256 pixels), same seed
    (each image its own, as a run trains it: --seeding image; rows without `seeding` trained
    every image at seed 0, "run"; the summary takes "image" rows where there are any),
    steps, passes and precision. Mean and spread of the PSNR/SSIM difference per noise kind,
    beside the noise floor: the same whole-image training with another seed ("whole seed 1"),
    i.e. how far two runs of one method differ at this budget.
    Each (image, mode) result is appended to --pieces as soon as it is done, and a rerun
    skips what is there: run it in the background, in pieces, and it resumes.
(b) cost: peak memory (RSS of a fresh process) and seconds per training step and per
    inference pass (all tiles) at 0.25, 1, 4 and 12 MP in the default crop/tiled plan, and
    whole-image where it fits this machine (else the estimate), against estimate_memory.

    python benchmarks/bench_large.py quality --data-root ../shared/data [--images 4] [--steps 800]
    python benchmarks/bench_large.py summary      # the table of what --pieces holds so far
    python benchmarks/bench_large.py cost [--sizes 0.25,1,4,12]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import add_seeding_option, centre_crop, one_seeding, paired_rule, read_lines, rule_line, seeding_of

from model.config import S2SConfig
from model.memory import MB, estimate, estimate_memory
from s2s_sweep.datasets import open_dataset
from s2s_sweep.metrics import calculate_psnr, calculate_ssim
from s2s_sweep.run_settings import RunSettings

RESULTS = Path("benchmarks/results")
KINDS = {"cbsd68-25": "synthetic σ=25", "polyu": "real (PolyU)"}
SEED_FLOOR = "whole seed 1"
RESOLVE_DB = 0.1  # the gap the issue asks crop training to stay within


def quality(args) -> None:
    from model.denoiser import denoise

    pieces = Path(args.pieces)
    pieces.parent.mkdir(parents=True, exist_ok=True)

    def protocol(row: dict) -> tuple:  # what a piece was trained under (the first rows' side, 256, went unrecorded)
        return row.get("side", 256), row["steps"], row["passes"], row["precision"], seeding_of(row)

    done = {(r["dataset"], r["image_id"], r["mode"], protocol(r)) for r in read_lines(pieces)}
    wanted = protocol(vars(args))
    run_settings = RunSettings(seeding=args.seeding)
    crop, batch = map(int, args.crops.split("x"))
    modes = {"whole": {}, f"crops {args.crops}": {"crop_size": crop, "crop_batch": batch}, SEED_FLOOR: {"seed": 1}}
    base = S2SConfig(p=0.4, steps=args.steps, passes=args.passes, lambda_iqa=0.0, precision=args.precision, seed=0)
    datasets = {name: open_dataset(name, args.data_root).select(limit=args.images) for name in KINDS}
    for index in range(args.images):  # the kinds interleaved, so a partial run already covers both
        for name, dataset in datasets.items():
            image_id = dataset.ids[index]
            noisy, clean = (centre_crop(image, args.side) for image in dataset.load(image_id))
            for mode, settings in modes.items():
                if (name, image_id, mode, wanted) in done:
                    continue
                config = base.replace(p=0.7 if name == "polyu" else 0.4, **settings)  # the paper's p per kind
                config = config.replace(seed=run_settings.image_seed(config.seed, image_id))
                started = time.perf_counter()
                result = denoise(noisy, config)
                row = {
                    "dataset": name,
                    "image_id": image_id,
                    "mode": mode,
                    "side": args.side,
                    "crop": result.plan.crop,
                    "batch": result.plan.batch,
                    "psnr": calculate_psnr(result.denoised, clean),
                    "ssim": calculate_ssim(result.denoised, clean),
                    "seconds": time.perf_counter() - started,
                    "steps": config.steps,
                    "passes": config.passes,
                    "precision": config.precision,
                    "seeding": args.seeding,
                    "seed": config.seed,
                }
                with pieces.open("a") as stream:
                    stream.write(json.dumps(row) + "\n")
                print(
                    f"{name} {image_id} {mode}: {row['psnr']:.2f} dB {row['ssim']:.4f} ({row['seconds']:.0f} s)",
                    flush=True,
                )
    summarise_quality(pieces, f"crops {args.crops}", Path(args.json))


def spread(values: np.ndarray) -> float:
    """Sample standard deviation (0 for fewer than two values)."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarise_quality(pieces: Path, cropped: str, out: Path) -> None:
    """Per noise kind: crops − whole (paired by image), beside whole seed 1 − whole (the noise floor)."""
    rows = read_lines(pieces)
    report = {"rows": rows, "summary": {}}
    print(
        f"| noise | images | whole PSNR | {cropped} PSNR | Δ PSNR crops − whole | Δ SSIM | Δ PSNR seed 1 − seed 0 "
        f"(whole) | images to resolve ±{RESOLVE_DB} dB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rules = []
    for name, kind in KINDS.items():
        by_image = {}
        kind_rows, seeding = one_seeding([row for row in rows if row["dataset"] == name])
        for row in kind_rows:
            by_image.setdefault(row["image_id"], {})[row["mode"]] = row
        pairs = [(m["whole"], m[cropped]) for m in by_image.values() if "whole" in m and cropped in m]
        floor = np.array(
            [m[SEED_FLOOR]["psnr"] - m["whole"]["psnr"] for m in by_image.values() if "whole" in m and SEED_FLOOR in m]
        )
        if not pairs:
            continue
        d_psnr = np.array([c["psnr"] - w["psnr"] for w, c in pairs])
        d_ssim = np.array([c["ssim"] - w["ssim"] for w, c in pairs])
        summary = {
            "images": len(pairs),
            "seeding": seeding,
            "whole_psnr": float(np.mean([w["psnr"] for w, _ in pairs])),
            "crops_psnr": float(np.mean([c["psnr"] for _, c in pairs])),
            "delta_psnr_mean": float(d_psnr.mean()),
            "delta_psnr_sd": spread(d_psnr),
            "delta_ssim_mean": float(d_ssim.mean()),
            "seed_floor_images": len(floor),
            "seed_floor_psnr_mean": float(floor.mean()) if len(floor) else None,
            "seed_floor_psnr_sd": spread(floor),
            # paired images for a 95% interval of ±RESOLVE_DB on the mean difference, given the spread seen
            "images_to_resolve": int(np.ceil((1.96 * spread(d_psnr) / RESOLVE_DB) ** 2)),
            "rule": paired_rule([c["psnr"] for _, c in pairs], [w["psnr"] for w, _ in pairs]),
        }
        report["summary"][name] = summary
        floor_text = (
            f"{summary['seed_floor_psnr_mean']:+.2f} ± {summary['seed_floor_psnr_sd']:.2f} ({len(floor)} images)"
            if len(floor)
            else "-"
        )
        print(
            f"| {kind} | {len(pairs)} | {summary['whole_psnr']:.2f} | {summary['crops_psnr']:.2f} | "
            f"{summary['delta_psnr_mean']:+.2f} ± {summary['delta_psnr_sd']:.2f} | {summary['delta_ssim_mean']:+.4f} | "
            f"{floor_text} | {summary['images_to_resolve']} |"
        )
        rules.append(f"{kind} (seeding {seeding}), crops − whole: {rule_line(summary['rule'])}")
    print("\n".join(rules))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


MEASURE = """
import json, sys, time
import numpy as np, torch
from model.config import S2SConfig
from model.denoiser import build_network, infer, to_batch, train
from model.memory import estimate, peak_rss_bytes
torch.set_num_threads(2)
height, width, crop, batch, tile, settings = json.loads(sys.argv[1])
config = S2SConfig(**settings)
image = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
net, padded = build_network(3, config, torch.device("cpu")), to_batch(image, torch.device("cpu"))
plan = estimate(height, width, config, crop, batch, tile)
train(net, padded, height, width, config.replace(steps=1), plan)  # warm-up step
started = time.perf_counter()
train(net, padded, height, width, config.replace(steps=config.steps - 1), plan)
step = (time.perf_counter() - started) / (config.steps - 1)
started = time.perf_counter()
infer(net, padded, config.replace(passes=1), tile)
print(json.dumps({"step_s": step, "pass_s": time.perf_counter() - started, "peak_rss_mb": peak_rss_bytes() / 2**20}))
"""


def cost(args) -> None:
    settings = {"steps": 3, "passes": 1, "lambda_iqa": 0.0, "precision": args.precision}
    config = S2SConfig(**settings)
    rows = []
    for megapixels in map(float, args.sizes.split(",")):
        width = int(round(np.sqrt(megapixels * 1e6 * 4 / 3) / 32)) * 32  # 4:3 photos
        height = int(round(width * 3 / 4 / 32)) * 32
        default = estimate_memory(height, width, config)
        plans = (
            {"plan": default}
            if not (default.crop or default.tile)
            else {"plan": default, "whole": estimate(height, width, config, 0, 1, 0)}
        )
        for mode, plan in plans.items():
            row = {
                "megapixels": height * width / 1e6,
                "size": f"{width}x{height}",
                "mode": mode,
                "crop": plan.crop,
                "batch": plan.batch,
                "tile": plan.tile,
                "estimate_mb": plan.peak_bytes / MB,
            }
            if plan.peak_bytes > args.max_gb * 2**30:
                row["measured"] = False  # does not fit this machine: the estimate stands
            else:
                done = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        MEASURE,
                        json.dumps([height, width, plan.crop, plan.batch, plan.tile, settings]),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row.update(json.loads(done.stdout.splitlines()[-1]), measured=True)
                row["estimate_error"] = row["estimate_mb"] / row["peak_rss_mb"] - 1
            rows.append(row)
            measured = (
                f"{row['peak_rss_mb']:8.0f} {row['step_s']:8.2f} {row['pass_s']:8.1f}"
                if row["measured"]
                else f"{'-':>8} {'-':>8} {'-':>8}"
            )
            print(
                f"{row['size']:>10} {row['megapixels']:5.2f} MP {mode:>5} crop {row['crop']:3d}x{row['batch']} tile "
                f"{row['tile']:3d} | est {row['estimate_mb']:8.0f} MB | {measured}",
                flush=True,
            )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"precision": args.precision, "rows": rows}, indent=2))
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--data-root")
    q.add_argument("--images", type=int, default=4, help="per noise kind")
    q.add_argument("--side", type=int, default=256)
    q.add_argument("--steps", type=int, default=800)
    q.add_argument("--passes", type=int, default=50)
    q.add_argument("--crops", default="128x4", help="SIDExBATCH: crops per step with the whole image's pixels")
    q.add_argument("--precision", default="bf16")
    add_seeding_option(q)
    q.add_argument("--pieces", default=str(RESULTS / "bench_large_quality.jsonl"))
    q.add_argument("--json", default=str(RESULTS / "bench_large_quality.json"))
    r = sub.add_parser("summary")
    r.add_argument("--crops", default="128x4")
    r.add_argument("--pieces", default=str(RESULTS / "bench_large_quality.jsonl"))
    r.add_argument("--json", default=str(RESULTS / "bench_large_quality.json"))
    c = sub.add_parser("cost")
    c.add_argument("--sizes", default="0.25,1,4,12", help="megapixels, comma-separated")
    c.add_argument("--precision", default="fp32")
    c.add_argument("--max-gb", type=float, default=20.0, help="measure only what the estimate says fits")
    c.add_argument("--json", default=str(RESULTS / "bench_large_cost.json"))
    args = parser.parse_args()
    if args.part == "summary":
        summarise_quality(Path(args.pieces), f"crops {args.crops}", Path(args.json))
    else:
        quality(args) if args.part == "quality" else cost(args)


if __name__ == "__main__":
    main()
