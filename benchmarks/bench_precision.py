"""Is bf16 autocast as good as fp32? PSNR/SSIM of both at equal protocol, their speed, and the
decision `precision: auto` takes from them.

Per noise kind (CBSD68 σ = 25, PolyU real noise), the first --images images, centre crops of
--side, the kind's paper p, steps and passes, λ_IQA 0 (the real IQA weights are not to be had
offline), each image at its own seed (`seeding: image`, as a run trains it: docs/variance.md; rows
without `seeding` were trained at seed 0 everywhere, "run"); only `precision` differs. Each
(image, precision) result is appended to --pieces as soon as it is done and a rerun skips what is
there, so it runs in the background, in pieces. Rows record whether the machine computes bf16
natively (model/config.py native_bf16): emulated bf16 says nothing of the speed of native bf16.

The summary gives, per kind and protocol, the mean PSNR/SSIM of each precision, the paired
difference and the rule's verdict (benchmarks/common.py: the lower end of its 95% interval above
−0.1 dB) with the images a verdict would need, and the seconds per image. The decision: `precision:
auto` takes bf16 on a device type (cpu, cuda) where rows measured natively there, at ≥ MIN_IMAGES
images per kind, pass the rule on every kind; the JSON's `auto_bf16` lists those device types and
model/config.py BF16_AUTO must equal it (tests/test_bench_rule.py checks). On a GPU it is one
command, and cheap there:

    python benchmarks/bench_precision.py run --data-root ../shared/data --device cuda [--images 16]
    python benchmarks/bench_precision.py summary
"""

import json
import time
from pathlib import Path

import numpy as np
from common import (
    KINDS,
    add_seeding_option,
    centre_crop,
    kinds_parser,
    paired_rule,
    read_lines,
    rule_line,
    seeding_of,
)

from model.config import PAPER_DEFAULTS, S2SConfig, native_bf16
from s2s_sweep.datasets import open_dataset
from s2s_sweep.images import to_uint8
from s2s_sweep.metrics import calculate_psnr, calculate_ssim
from s2s_sweep.run_settings import RunSettings

RESULTS = Path("benchmarks/results")
PRECISIONS = ("fp32", "bf16")
MIN_IMAGES = 16  # per kind, before a verdict may change the default (issue "tell better from worse")
PROTOCOL = ("side", "p", "steps", "passes", "device", "seeding")


def protocol_of(row: dict) -> tuple:
    """What two rows must share to be paired."""
    return tuple(seeding_of(row) if key == "seeding" else row[key] for key in PROTOCOL)


def run(args) -> None:
    import torch

    from model.denoiser import denoise

    torch.set_num_threads(args.threads)
    pieces = Path(args.pieces)
    pieces.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["dataset"], r["image_id"], r["precision"], protocol_of(r)) for r in read_lines(pieces)}
    run_settings = RunSettings(seeding=args.seeding)
    native = native_bf16(args.device.split(":")[0])
    datasets = {name: open_dataset(name, args.data_root).select(limit=args.images) for name in args.kinds}
    todo = []  # (kind, image, precision, protocol), the kinds interleaved so a partial run covers both
    for index in range(args.images):
        for name, dataset in datasets.items():
            protocol = {"side": args.side, "p": PAPER_DEFAULTS[name.split("-")[0]]["p"], "steps": args.steps}
            protocol |= {"passes": args.passes, "device": args.device, "seeding": args.seeding}
            for precision in PRECISIONS:
                if (name, dataset.ids[index], precision, protocol_of(protocol)) not in done:
                    todo.append((name, dataset.ids[index], precision, protocol))
    started_all = time.perf_counter()
    for finished, (name, image_id, precision, protocol) in enumerate(todo, start=1):
        noisy, clean = (centre_crop(image, args.side) for image in datasets[name].load(image_id))
        config = S2SConfig(
            p=protocol["p"],
            steps=args.steps,
            passes=args.passes,
            lambda_iqa=0.0,
            precision=precision,
            device=args.device,
            seed=run_settings.image_seed(args.seed, image_id),
        )
        started = time.perf_counter()
        denoised = to_uint8(denoise(noisy, config).denoised)
        row = {"dataset": name, "image_id": image_id, "precision": precision, **protocol}
        row |= {
            "seed": config.seed,
            "native_bf16": native,
            "psnr": calculate_psnr(denoised, clean),
            "ssim": calculate_ssim(denoised, clean),
            "noisy_psnr": calculate_psnr(noisy, clean),
            "seconds": time.perf_counter() - started,
        }
        with pieces.open("a") as file:
            file.write(json.dumps(row) + "\n")
        eta = (time.perf_counter() - started_all) / finished * (len(todo) - finished)
        print(
            f"[{finished}/{len(todo)}, ETA {eta / 60:.0f} min] {name} {image_id} {precision}: "
            f"{row['psnr']:.2f} dB, {row['seconds']:.0f} s",
            flush=True,
        )
    summary(args)


def compare(pairs: list[tuple[dict, dict]]) -> dict:
    """bf16 against fp32 over (fp32 row, bf16 row) pairs of one kind and protocol."""
    fp32, bf16 = (np.array([pair[k]["psnr"] for pair in pairs]) for k in (0, 1))
    delta_ssim = np.array([b["ssim"] - f["ssim"] for f, b in pairs])
    fp32_s, bf16_s = (float(np.mean([pair[k]["seconds"] for pair in pairs])) for k in (0, 1))
    natives = {pair[1].get("native_bf16") for pair in pairs}
    return {
        "images": len(pairs),
        "fp32_psnr": float(fp32.mean()),
        "bf16_psnr": float(bf16.mean()),
        "delta_psnr_worst": float((bf16 - fp32)[np.argmax(np.abs(bf16 - fp32))]),
        "delta_ssim_mean": float(delta_ssim.mean()),
        "fp32_seconds": fp32_s,
        "bf16_seconds": bf16_s,
        "speedup": fp32_s / bf16_s,
        "native_bf16": natives.pop() if len(natives) == 1 else None,  # None: not recorded, or mixed
        "rule": paired_rule(list(bf16), list(fp32)),
    }


def decide(results: list[dict]) -> list[str]:
    """The device types on which `precision: auto` takes bf16: a protocol measured natively there with
    ≥ MIN_IMAGES images on every kind, each passing the rule."""

    def measurement(result: dict) -> tuple:  # what the kinds of one measurement share: all but each kind's p
        return tuple(value for key, value in result["protocol"].items() if key != "p")

    chosen = set()
    for protocol in {measurement(r) for r in results}:
        kinds = {r["kind"]: r for r in results if measurement(r) == protocol}
        if set(kinds) == set(KINDS) and all(
            r["native_bf16"] is True and r["images"] >= MIN_IMAGES and r["rule"]["passes"] for r in kinds.values()
        ):
            chosen.add(next(iter(kinds.values()))["protocol"]["device"].split(":")[0])
    return sorted(chosen)


def summary(args) -> None:
    rows = read_lines(Path(args.pieces))
    by_key = {(r["dataset"], r["image_id"], r["precision"], protocol_of(r)): r for r in rows}
    results = []
    for (kind, image_id, precision, protocol), fp32 in by_key.items():
        if precision != "fp32" or (kind, image_id, "bf16", protocol) not in by_key:
            continue
        results.append((kind, protocol, fp32, by_key[(kind, image_id, "bf16", protocol)]))
    table = []
    for kind, protocol in sorted({(kind, protocol) for kind, protocol, _, _ in results}, key=str):
        pairs = [(f, b) for k, p, f, b in results if (k, p) == (kind, protocol)]
        table.append({"kind": kind, "protocol": dict(zip(PROTOCOL, protocol))} | compare(pairs))
    print(
        f"{'noise':<16} {'crop/steps':<10} {'seeding':<7} {'dev':<5} {'native':<6} {'fp32 PSNR':>9} "
        f"{'bf16 PSNR':>9} {'worst':>7} {'Δ SSIM':>8} {'s fp32':>7} {'s bf16':>7} {'speed-up':>8}  rule (bf16 − fp32)"
    )
    for t in table:
        native = {True: "yes", False: "no", None: "?"}[t["native_bf16"]]
        crop_steps = f"{t['protocol']['side']}²/{t['protocol']['steps']}"
        print(
            f"{KINDS[t['kind']]:<16} {crop_steps:<10} {t['protocol']['seeding']:<7} {t['protocol']['device']:<5} "
            f"{native:<6} {t['fp32_psnr']:>9.2f} {t['bf16_psnr']:>9.2f} {t['delta_psnr_worst']:>+7.3f} "
            f"{t['delta_ssim_mean']:>+8.4f} {t['fp32_seconds']:>7.0f} {t['bf16_seconds']:>7.0f} "
            f"{t['speedup']:>7.2f}x  {rule_line(t['rule'])}"
        )
    auto_bf16 = decide(table)
    print(
        f"precision auto takes bf16 on: {', '.join(auto_bf16) or 'no device type'} (a native measurement with "
        f">= {MIN_IMAGES} images per kind passing the rule on every kind; model/config.py BF16_AUTO follows it)"
    )
    Path(args.json).write_text(
        json.dumps({"results": table, "min_images": MIN_IMAGES, "auto_bf16": auto_bf16}, indent=2) + "\n"
    )
    print(f"wrote {args.json}")


def main() -> None:
    parser = kinds_parser(__doc__, images=MIN_IMAGES, side=128)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    add_seeding_option(parser)
    parser.add_argument("--pieces", default=str(RESULTS / "bench_precision.jsonl"))
    parser.add_argument("--json", default=str(RESULTS / "bench_precision.json"))
    args = parser.parse_args()
    run(args) if args.command == "run" else summary(args)


if __name__ == "__main__":
    main()
