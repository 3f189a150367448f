"""Does S2S+ in the contiguous layout (NCHW) end where the default channels_last does?

On this project's AVX2 CPU bench_core times training in NCHW 1.62x faster than in channels_last
at 256² (1.29x at 128²; inference 1.45x vs 1.67x the reference: bench_core.json). The layout only
reorders floating-point sums (the same seed draws the same masks in both: model/network.py), yet a
training amplifies such differences, so it ends slightly elsewhere. Whether NCHW may become the
CPU default is a decision for the rule (docs/variance.md), measured here.

Per (image, seed) of benchmarks/results/bench_variance_<kind>.jsonl (96² centre crops, the kind's
paper p, λ_IQA 0, fp32, 800 steps, 50 passes), one training in NCHW (`channels_last: false`) with
the same crop, seed, steps and passes, paired with that file's raw read-out at its final step: the
same weights a plain run of channels_last ends with (tests/test_bench_rule.py checks it), so the
reference is not trained twice. The summary applies the rule (benchmarks/common.py; per image the
mean over the seeds both layouts have), with the spread of the per-training differences beside
the seed spread of the reference, and how many images a verdict would need.

    python benchmarks/bench_layout.py run --data-root ../shared/data --kinds cbsd68-25 &
    python benchmarks/bench_layout.py run --data-root ../shared/data --kinds polyu &
    python benchmarks/bench_layout.py summary
"""

import json
import time
from pathlib import Path

import numpy as np
from common import KINDS, QUANTIZE, RAW, centre_crop, kinds_parser, paired_rule, read_lines, rule_line

from model.config import S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.images import to_uint8
from s2s_sweep.metrics import calculate_psnr

RESULTS = Path("benchmarks/results")


def nchw_training(noisy: np.ndarray, clean: np.ndarray, reference: dict, device: str) -> dict:
    """The NCHW twin of one bench_variance training: its PSNR at the final step and CPU seconds."""
    from model.denoiser import denoise

    config = S2SConfig(
        p=reference["p"],
        steps=reference["steps"][-1],
        passes=reference["passes"],
        lambda_iqa=0.0,
        precision=reference["precision"],
        seed=reference["seed"],
        device=device,
        channels_last=False,
    )
    started = time.process_time()
    denoised = denoise(noisy, config).denoised
    return {"psnr": calculate_psnr(to_uint8(denoised, QUANTIZE), clean), "seconds": time.process_time() - started}


def run(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    for kind in args.kinds:
        dataset = open_dataset(kind, args.data_root)
        ids = set(dataset.ids[: args.images])
        references = read_lines(Path(args.pieces) / f"bench_variance_{kind}.jsonl")
        references = [row for row in references if row["side"] == args.side and row["image_id"] in ids]
        path = Path(args.pieces) / f"bench_layout_{kind}.jsonl"
        done = {(row["image_id"], row["seed"]) for row in read_lines(path)}
        todo = [row for row in references if (row["image_id"], row["seed"]) not in done]
        started = time.perf_counter()
        for index, reference in enumerate(todo):
            noisy, clean = (centre_crop(image, args.side) for image in dataset.load(reference["image_id"]))
            result = nchw_training(noisy, clean, reference, args.device)
            row = {key: reference[key] for key in ("dataset", "image_id", "seed", "side", "p", "passes", "precision")}
            row |= {"steps": reference["steps"][-1], "layout": "nchw", **result}
            row["reference_psnr"] = reference["curves"][RAW]["psnr"][-1]
            with path.open("a") as file:
                file.write(json.dumps(row) + "\n")
            eta = (time.perf_counter() - started) / (index + 1) * (len(todo) - index - 1)
            print(
                f"[{index + 1}/{len(todo)}, ETA {eta / 60:.0f} min] {kind} {reference['image_id']} seed "
                f"{reference['seed']}: NCHW {row['psnr']:.2f} dB, channels_last {row['reference_psnr']:.2f} dB "
                f"({result['seconds']:.0f} CPU s)",
                flush=True,
            )


def summarise_kind(rows: list[dict]) -> dict:
    """The rule over images for NCHW − channels_last, and the spread of the per-training differences."""
    by_image: dict[str, list[dict]] = {}
    for row in rows:
        by_image.setdefault(row["image_id"], []).append(row)
    ids = sorted(by_image)
    candidate = [float(np.mean([row["psnr"] for row in by_image[image]])) for image in ids]
    reference = [float(np.mean([row["reference_psnr"] for row in by_image[image]])) for image in ids]
    differences = [row["psnr"] - row["reference_psnr"] for row in rows]
    return {
        "images": len(ids),
        "trainings": len(rows),
        "image_ids": ids,
        "nchw_psnr": float(np.mean(candidate)),
        "channels_last_psnr": float(np.mean(reference)),
        "training_difference_sd_db": float(np.std(differences, ddof=1)) if len(differences) > 1 else None,
        "largest_training_difference_db": float(np.max(np.abs(differences))),
        "rule": paired_rule(candidate, reference),
    }


def summary(args) -> None:
    table = {}
    for kind in KINDS:
        rows = read_lines(Path(args.pieces) / f"bench_layout_{kind}.jsonl")
        if rows:
            table[kind] = summarise_kind(rows)
    for kind, entry in table.items():
        spread = entry["training_difference_sd_db"]
        print(
            f"{KINDS[kind]}: {entry['images']} images, {entry['trainings']} trainings; PSNR NCHW "
            f"{entry['nchw_psnr']:.2f}, channels_last {entry['channels_last_psnr']:.2f} dB; per training "
            f"NCHW − channels_last sd {spread if spread is None else f'{spread:.3f}'} dB, largest "
            f"{entry['largest_training_difference_db']:.2f} dB\n  {rule_line(entry['rule'])}"
        )
    adoptable = len(table) == len(KINDS) and all(entry["rule"]["passes"] for entry in table.values())
    print(f"NCHW as the CPU default: {'the rule passes on every kind' if adoptable else 'not shown'}")
    Path(args.json).write_text(json.dumps({"kinds": table, "adoptable": adoptable}, indent=2))
    print(f"wrote {args.json}")


def main() -> None:
    parser = kinds_parser(__doc__, images=8, side=96)
    parser.add_argument(
        "--pieces", default=str(RESULTS), help="folder of bench_variance_KIND.jsonl, and of bench_layout_KIND.jsonl"
    )
    parser.add_argument("--json", default=str(RESULTS / "bench_layout.json"))
    args = parser.parse_args()
    run(args) if args.command == "run" else summary(args)


if __name__ == "__main__":
    main()
