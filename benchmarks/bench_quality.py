"""Denoising quality of Self2Self+ against classic baselines on the same images.

Quick protocol for a CPU (the default): CBSD68 σ = 25, the first 4 images, centre crops
of 128x128, 300 training steps, 50 passes. The paper protocol is the same command with
`--limit 68 --crop 0 --steps 4000 --passes 500` (a GPU job).

    python benchmarks/bench_quality.py [--dataset cbsd68-25] [--data-root DIR] [--limit 4] [--crop 128]

Baselines: CBM3D (`bm3d` package, `pip install -e ".[bench]"`), scikit-image's non-local
means and BayesShrink wavelet denoiser. Noise σ: from the dataset name for CBSD68
(the true σ), else estimated per image with skimage.restoration.estimate_sigma.
Metrics: s2s_sweep.metrics (8-bit PSNR/SSIM). Prints a table and writes JSON.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from skimage.restoration import denoise_nl_means, denoise_wavelet, estimate_sigma

from model.config import S2SConfig
from model.denoiser import denoise
from s2s_sweep.datasets import open_dataset
from s2s_sweep.metrics import calculate_psnr, calculate_ssim


def centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    if side <= 0:
        return image
    top, left = max(0, (image.shape[0] - side) // 2), max(0, (image.shape[1] - side) // 2)
    return image[top : top + side, left : left + side]


def cbm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    if noisy.shape[2] == 3:
        return bm3d.bm3d_rgb(noisy, sigma)
    return bm3d.bm3d(noisy[..., 0], sigma)[..., None]


def nl_means(noisy: np.ndarray, sigma: float) -> np.ndarray:
    return denoise_nl_means(noisy, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1)


def wavelet(noisy: np.ndarray, sigma: float) -> np.ndarray:
    return denoise_wavelet(noisy, sigma=sigma, method="BayesShrink", mode="soft", rescale_sigma=True, channel_axis=-1)


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
    parser.add_argument("--json", default="benchmarks/results/bench_quality.json")
    args = parser.parse_args()

    config = S2SConfig(p=args.p, steps=args.steps, passes=args.passes, lambda_iqa=args.lambda_iqa, device=args.device)
    dataset = open_dataset(args.dataset, args.data_root).select(limit=args.limit)
    if not dataset.has_clean:
        raise SystemExit(f"error: {args.dataset} has no clean references to score against")
    known_sigma = float(args.dataset.removeprefix("cbsd68-")) / 255 if args.dataset.startswith("cbsd68-") else None
    methods = {"S2S+": lambda noisy, sigma: denoise(noisy, config).denoised, "CBM3D": cbm3d, "NL-means": nl_means, "wavelet": wavelet}
    scores = {name: {"psnr": [], "ssim": [], "seconds": []} for name in ["noisy", *methods]}
    for index, (image_id, noisy, clean) in enumerate(dataset, 1):
        noisy, clean = centre_crop(noisy, args.crop), centre_crop(clean, args.crop)
        sigma = known_sigma or float(np.mean(estimate_sigma(noisy, channel_axis=-1)))
        results = {"noisy": (noisy, 0.0)}
        for name, method in methods.items():
            started = time.perf_counter()
            results[name] = (np.clip(method(noisy, sigma), 0, 1).astype(np.float32), time.perf_counter() - started)
        for name, (image, seconds) in results.items():
            scores[name]["psnr"].append(calculate_psnr(image, clean))
            scores[name]["ssim"].append(calculate_ssim(image, clean))
            scores[name]["seconds"].append(seconds)
        print(f"{index}/{len(dataset)} {image_id}: " + "  ".join(f"{n} {s['psnr'][-1]:.2f}" for n, s in scores.items()), flush=True)

    summary = {name: {key: float(np.mean(values)) for key, values in s.items()} for name, s in scores.items()}
    print(f"\n{args.dataset}, {len(dataset)} images, crop {args.crop or 'full'}, S2S+ {args.steps} steps / {args.passes} passes")
    print(f"{'method':>10} {'PSNR':>7} {'SSIM':>7} {'s/image':>8}")
    for name, row in summary.items():
        print(f"{name:>10} {row['psnr']:7.2f} {row['ssim']:7.4f} {row['seconds']:8.1f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    report = {"args": vars(args), "config": config.__dict__, "images": list(dataset.ids), "summary": summary, "per_image": scores}
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
