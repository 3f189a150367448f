"""Denoising quality of Self2Self+ against classic baselines on the same images.

Quick protocol for a CPU (the default): CBSD68 σ = 25, the first 4 images, centre crops
of 128x128, 300 training steps, 50 passes. The paper protocol is the same command with
`--limit 68 --crop 0 --steps 4000 --passes 500` (a GPU job).

    python benchmarks/bench_quality.py [--dataset cbsd68-25] [--data-root DIR] [--limit 4] [--crop 128]

Baselines: those of the runner (s2s_sweep/methods/: CBM3D with `pip install -e ".[baselines]"`,
scikit-image's non-local means and BayesShrink wavelets), given the dataset's true σ where it is
known (CBSD68), else the σ estimated from each image.
Metrics: s2s_sweep.metrics (8-bit PSNR/SSIM). Prints a table, the S2S+ seconds per image projected
to the paper protocol (4000 steps + 500 passes, at this λ_IQA and precision) and writes JSON.
Runs unchanged on a GPU (`--device cuda`).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import PAPER_PASSES, PAPER_STEPS, centre_crop  # this folder is on the path of a script run from it

from model.config import S2SConfig
from model.denoiser import denoise
from s2s_sweep.datasets import open_dataset
from s2s_sweep.methods import REGISTRY, estimate_noise_sigma
from s2s_sweep.methods.base import ClassicBaseline
from s2s_sweep.metrics import calculate_psnr, calculate_ssim


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cbsd68-25")
    parser.add_argument("--data-root")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128, help="centre crop side; 0 = full images")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--p", type=float, default=0.4)
    parser.add_argument("--lambda-iqa", type=float, default=0.0, help="0 by default: no IQA weights needed")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="S2S+ arithmetic (auto: fp32 until bf16 is measured equal, README Precision)",
    )
    parser.add_argument("--json", default="benchmarks/results/bench_quality.json")
    args = parser.parse_args()

    config = S2SConfig(
        p=args.p,
        steps=args.steps,
        passes=args.passes,
        lambda_iqa=args.lambda_iqa,
        device=args.device,
        precision=args.precision,
    )
    dataset = open_dataset(args.dataset, args.data_root).select(limit=args.limit)
    if not dataset.has_clean:
        raise SystemExit(f"error: {args.dataset} has no clean references to score against")
    paper_seconds = []  # S2S+ per image, projected to the paper protocol from this run's seconds per step and per pass

    def s2s(noisy: np.ndarray, sigma: float) -> np.ndarray:
        result = denoise(noisy, config)
        paper_seconds.append(
            result.train_seconds / config.steps * PAPER_STEPS + result.inference_seconds / config.passes * PAPER_PASSES
        )
        return result.denoised

    classic = [method for method in REGISTRY.values() if isinstance(method, ClassicBaseline)]
    methods = {
        "S2S+": s2s,
        **{method.label: lambda noisy, sigma, m=method: m.denoise_with_sigma(noisy, sigma / 255) for method in classic},
    }
    scores = {name: {"psnr": [], "ssim": [], "seconds": []} for name in ["noisy", *methods]}
    for index, (image_id, noisy, clean) in enumerate(dataset, 1):
        noisy, clean = centre_crop(noisy, args.crop), centre_crop(clean, args.crop)
        sigma = dataset.sigma if dataset.sigma is not None else estimate_noise_sigma(noisy)
        results = {"noisy": (noisy, 0.0)}
        for name, method in methods.items():
            started = time.perf_counter()
            results[name] = (np.clip(method(noisy, sigma), 0, 1).astype(np.float32), time.perf_counter() - started)
        for name, (image, seconds) in results.items():
            scores[name]["psnr"].append(calculate_psnr(image, clean))
            scores[name]["ssim"].append(calculate_ssim(image, clean))
            scores[name]["seconds"].append(seconds)
        print(
            f"{index}/{len(dataset)} {image_id}: " + "  ".join(f"{n} {s['psnr'][-1]:.2f}" for n, s in scores.items()),
            flush=True,
        )

    summary = {name: {key: float(np.mean(values)) for key, values in s.items()} for name, s in scores.items()}
    print(
        f"\n{args.dataset}, {len(dataset)} images, crop {args.crop or 'full'}, S2S+ {args.steps} steps / {args.passes} "
        "passes"
    )
    print(f"{'method':>10} {'PSNR':>7} {'SSIM':>7} {'s/image':>8}")
    for name, row in summary.items():
        print(f"{name:>10} {row['psnr']:7.2f} {row['ssim']:7.4f} {row['seconds']:8.1f}")
    projected = float(np.mean(paper_seconds))
    print(
        f"S2S+ under the paper protocol ({PAPER_STEPS} steps + {PAPER_PASSES} passes, λ_IQA {config.lambda_iqa:g}) on "
        f"this device: {projected / 60:.1f} min per image (projected)"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    report = {
        "args": vars(args),
        "config": config.__dict__,
        "images": list(dataset.ids),
        "summary": summary,
        "per_image": scores,
        "paper_protocol_seconds_per_image": projected,
    }
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
