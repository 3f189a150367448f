"""Is bf16 autocast as good as fp32? PSNR/SSIM of both at equal protocol, and their speed.

Per noise kind (CBSD68 σ = 25, PolyU real noise), the first --images images, centre crops of
--side, the kind's paper p, the same seed, steps and passes, λ_IQA 0 (the real IQA weights are
not to be had offline); only `precision` differs. Each (image, precision) result is appended to
--pieces as soon as it is done and a rerun skips what is there, so it runs in the background, in
pieces. The summary gives per kind the mean PSNR/SSIM of each precision, the paired difference
(mean ± sd, worst image) and the seconds per image. `precision: auto` is to take bf16 on
hardware that has it natively (model/config.py native_bf16) only once this gap is shown within
0.05 dB on every kind. On a GPU, run it first (`--device cuda`): the CPU figures stand for
CUDA's bf16 until then.

    python benchmarks/bench_precision.py run --data-root ../shared/data [--images 8] [--steps 600]
    python benchmarks/bench_precision.py summary
"""

import json
import time
from pathlib import Path

import numpy as np
from common import KINDS, centre_crop, kinds_parser

from model.config import PAPER_DEFAULTS, S2SConfig, native_bf16
from s2s_sweep.datasets import open_dataset
from s2s_sweep.images import to_uint8
from s2s_sweep.metrics import calculate_psnr, calculate_ssim

RESULTS = Path("benchmarks/results")
PRECISIONS = ("fp32", "bf16")
GAP_DB = 0.05  # what `precision: auto` requires of bf16


def run(args) -> None:
    import torch

    from model.denoiser import denoise

    torch.set_num_threads(args.threads)
    pieces = Path(args.pieces)
    pieces.parent.mkdir(parents=True, exist_ok=True)
    done = (
        {(r["dataset"], r["image_id"], r["precision"]) for r in map(json.loads, pieces.read_text().splitlines())}
        if pieces.exists()
        else set()
    )
    datasets = {name: open_dataset(name, args.data_root).select(limit=args.images) for name in args.kinds}
    for index in range(args.images):  # the kinds interleaved, so a partial run covers both
        for name, dataset in datasets.items():
            image_id = dataset.ids[index]
            noisy, clean = (centre_crop(image, args.side) for image in dataset.load(image_id))
            p = PAPER_DEFAULTS[name.split("-")[0]]["p"]
            for precision in PRECISIONS:
                if (name, image_id, precision) in done:
                    continue
                config = S2SConfig(
                    p=p,
                    steps=args.steps,
                    passes=args.passes,
                    lambda_iqa=0.0,
                    precision=precision,
                    device=args.device,
                    seed=0,
                )
                started = time.perf_counter()
                denoised = to_uint8(denoise(noisy, config).denoised)
                row = {
                    "dataset": name,
                    "image_id": image_id,
                    "precision": precision,
                    "side": args.side,
                    "p": p,
                    "steps": args.steps,
                    "passes": args.passes,
                    "device": args.device,
                    "psnr": calculate_psnr(denoised, clean),
                    "ssim": calculate_ssim(denoised, clean),
                    "noisy_psnr": calculate_psnr(noisy, clean),
                    "seconds": time.perf_counter() - started,
                }
                with pieces.open("a") as file:
                    file.write(json.dumps(row) + "\n")
                print(f"{name} {image_id} {precision}: {row['psnr']:.2f} dB, {row['seconds']:.0f} s", flush=True)
    summary(args)


def summary(args) -> None:
    rows = [json.loads(line) for line in Path(args.pieces).read_text().splitlines()]
    by_key = {(r["dataset"], r["image_id"], r["precision"]): r for r in rows}
    table = {}
    print(
        f"{'noise':<16} {'n':>3} {'fp32 PSNR':>9} {'bf16 PSNR':>9} {'Δ bf16−fp32 dB':>16} {'worst':>7} {'Δ SSIM':>8} "
        f"{'s fp32':>7} {'s bf16':>7} {'speed-up':>8}"
    )
    for name, label in KINDS.items():
        pairs = [
            (by_key[(d, i, "fp32")], by_key[(d, i, "bf16")])
            for d, i, precision in by_key
            if d == name and precision == "fp32" and (d, i, "bf16") in by_key
        ]
        if not pairs:
            continue
        delta = np.array([b["psnr"] - f["psnr"] for f, b in pairs])
        delta_ssim = np.array([b["ssim"] - f["ssim"] for f, b in pairs])
        fp32_s, bf16_s = (float(np.mean([pair[k]["seconds"] for pair in pairs])) for k in (0, 1))
        table[name] = {
            "images": len(pairs),
            "fp32_psnr": float(np.mean([f["psnr"] for f, _ in pairs])),
            "bf16_psnr": float(np.mean([b["psnr"] for _, b in pairs])),
            "delta_psnr_mean": float(delta.mean()),
            "delta_psnr_sd": float(delta.std(ddof=1)) if len(delta) > 1 else 0.0,
            "delta_psnr_worst": float(delta[np.argmax(np.abs(delta))]),
            "delta_ssim_mean": float(delta_ssim.mean()),
            "fp32_seconds": fp32_s,
            "bf16_seconds": bf16_s,
            "speedup": fp32_s / bf16_s,
            "protocol": {k: pairs[0][0][k] for k in ("side", "p", "steps", "passes", "device")},
        }
        t = table[name]
        print(
            f"{label:<16} {t['images']:>3} {t['fp32_psnr']:>9.2f} {t['bf16_psnr']:>9.2f} {t['delta_psnr_mean']:>+9.3f} "
            f"± {t['delta_psnr_sd']:.3f} "
            f"{t['delta_psnr_worst']:>+7.3f} {t['delta_ssim_mean']:>+8.4f} {fp32_s:>7.0f} {bf16_s:>7.0f} "
            f"{t['speedup']:>7.2f}x"
        )
    within = all(abs(t["delta_psnr_mean"]) <= GAP_DB for t in table.values())
    native = native_bf16(rows[0]["device"].split(":")[0]) if rows else False
    print(
        f"bf16 within {GAP_DB} dB of fp32 on every kind: {'yes' if within else 'NO'}; bf16 native on this "
        f"{rows[0]['device'] if rows else 'device'}: {'yes' if native else 'no (emulated)'}"
    )
    Path(args.json).write_text(
        json.dumps({"kinds": table, "gap_db": GAP_DB, "within": within, "native_bf16": native}, indent=2)
    )
    print(f"wrote {args.json}")


def main() -> None:
    parser = kinds_parser(__doc__, images=8, side=128)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--pieces", default=str(RESULTS / "bench_precision.jsonl"))
    parser.add_argument("--json", default=str(RESULTS / "bench_precision.json"))
    args = parser.parse_args()
    run(args) if args.command == "run" else summary(args)


if __name__ == "__main__":
    main()
