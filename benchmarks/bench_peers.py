"""ZS-N2N, a fast learned zero-shot peer, beside S2S+ and CBM3D: quality and seconds per image.

Per noise kind (CBSD68 σ = 25, PolyU real noise), the first --images images as --side centre crops
(96² by default: the protocol of the variance, landscape and warm-start tables in docs/):

- ZS-N2N (`--method zsn2n`, s2s_sweep/methods/zsn2n.py): its paper's protocol, 2000 iterations on
  the whole crop, seeds 0 and 1 (its own seed spread);
- CBM3D (`--method cbm3d`): the dataset's σ on CBSD68, the σ estimated from each crop on PolyU;
- S2S+: the kind's paper p, 800 steps, 50 passes, λ_IQA 0, fp32 — PSNR/SSIM are the final raw
  read-outs of the same crops in benchmarks/results/bench_variance_<kind>.jsonl (the same protocol,
  trained by bench_variance.py; its mean over the seeds it has), so they are not trained twice.
  Its seconds are measured here on each crop (--timing-steps steps and --timing-passes passes,
  beside the other methods in the same process) and projected to 800 steps + 50 passes and to
  the paper protocol (4000 steps + 500 passes, PolyU 5000; λ_IQA 0).

Every method runs through the runner's own task (s2s_sweep.methods.denoise_image), one thread;
seconds are the CPU time of this process (so other work on the machine, or a pause, does not count;
on one thread they are the wall time of a free core).
The summary pairs ZS-N2N and CBM3D with S2S+ over the images all three have, by the rule of
benchmarks/common.py (candidate − S2S+; the mean over seeds per image), and prints seconds per image.

    python benchmarks/bench_peers.py run --data-root ../shared/data --kinds cbsd68-25 &
    python benchmarks/bench_peers.py run --data-root ../shared/data --kinds polyu &
    python benchmarks/bench_peers.py summary
    # the demo's seconds per image, ZS-N2N and S2S+ (bench_peers_demo.json)
    python benchmarks/bench_peers.py run --demo
"""

import json
import time
from pathlib import Path

import numpy as np
from common import KINDS, PAPER_PASSES, RAW, centre_crop, kinds_parser, paired_rule, read_lines, rule_line

from model.config import PAPER_DEFAULTS, S2SConfig
from model.denoiser import denoise
from s2s_sweep.datasets import open_dataset
from s2s_sweep.methods import Method, denoise_image
from s2s_sweep.run_settings import RunSettings

RESULTS = Path("benchmarks/results")
S2S_STEPS, S2S_PASSES = 800, 50  # bench_variance's protocol
ZSN2N_SEEDS = (0, 1)


def s2s_seconds(noisy: np.ndarray, kind: str, args) -> dict:
    """S2S+'s seconds on this crop, measured on a short training and projected."""
    family = kind.split("-")[0]
    config = S2SConfig(
        p=PAPER_DEFAULTS[family]["p"],
        steps=args.timing_steps,
        passes=args.timing_passes,
        lambda_iqa=0.0,
        precision="fp32",
    )
    started = time.process_time()
    result = denoise(noisy, config.replace(device=args.device))
    cpu = time.process_time() - started  # CPU time: other processes and pauses do not count
    share = cpu / (result.train_seconds + result.inference_seconds)  # of the wall time, split as training and inference
    per_step = result.train_seconds * share / args.timing_steps
    per_pass = result.inference_seconds * share / args.timing_passes
    paper_steps = PAPER_DEFAULTS[family]["steps"]
    return {
        "seconds_per_step": per_step,
        "seconds_per_pass": per_pass,
        "seconds": per_step * S2S_STEPS + per_pass * S2S_PASSES,
        "paper_protocol_seconds": per_step * paper_steps + per_pass * PAPER_PASSES,
    }


def run(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    pieces = Path(args.pieces)
    done = {(row["dataset"], row["image_id"]) for row in read_lines(pieces)}
    for kind in args.kinds:
        dataset = open_dataset(kind, args.data_root)
        todo = [image_id for image_id in dataset.ids[: args.images] if (kind, image_id) not in done]
        started = time.perf_counter()
        for index, image_id in enumerate(todo):
            noisy, clean = (centre_crop(image, args.side) for image in dataset.load(image_id))
            row = {"dataset": kind, "image_id": image_id, "side": args.side, "methods": {}}
            for seed in ZSN2N_SEEDS:
                zsn2n = Method("zsn2n", S2SConfig(seed=seed), RunSettings(seeding="run"))  # the seed it names, as built
                row["methods"][f"zsn2n seed {seed}"] = timed(image_id, noisy, clean, zsn2n, None)
            row["methods"]["cbm3d"] = timed(image_id, noisy, clean, Method("cbm3d"), dataset.sigma)
            row["s2s_timing"] = s2s_seconds(noisy, kind, args)
            row["noisy_psnr"] = row["methods"]["cbm3d"]["noisy_psnr"]
            with pieces.open("a") as file:
                file.write(json.dumps(row) + "\n")
            eta = (time.perf_counter() - started) / (index + 1) * (len(todo) - index - 1)
            print(
                f"[{index + 1}/{len(todo)}, ETA {eta / 60:.0f} min] {kind} {image_id}: "
                + " ".join(
                    f"{name} {value['psnr']:.2f} dB {value['seconds']:.1f} s" for name, value in row["methods"].items()
                )
                + f"; S2S+ {row['s2s_timing']['seconds']:.0f} s projected",
                flush=True,
            )


def timed(image_id: str, noisy: np.ndarray, clean: np.ndarray, method: Method, sigma: float | None) -> dict:
    """The runner's task on one image: its scores, and its seconds as CPU time of this one-thread
    process (so other processes on the machine, or a pause, do not count)."""
    started = time.process_time()
    result = denoise_image(image_id, noisy, clean, method, sigma, 1)
    seconds = time.process_time() - started
    return {
        "psnr": result["psnr"],
        "ssim": result["ssim"],
        "ssim_3d": result["ssim_3d"],
        "noisy_psnr": result["noisy_psnr"],
        "noise_sigma": result.get("noise_sigma"),
        "seconds": seconds,  # CPU seconds of the whole task: denoising and scoring
        "wall_seconds": result["train_seconds"] + result["inference_seconds"],
    }


def s2s_finals(kind: str, side: int) -> dict[str, dict]:
    """Per image: S2S+'s final raw read-out (800 steps, 50 passes) on crops of `side`, mean over the
    seeds bench_variance has."""
    by_image: dict[str, list[dict]] = {}
    for row in read_lines(RESULTS / f"bench_variance_{kind}.jsonl"):
        if row["side"] == side and row["steps"][-1] == S2S_STEPS and row["passes"] == S2S_PASSES:
            by_image.setdefault(row["image_id"], []).append(row)
    return {
        image: {
            "psnr": float(np.mean([run["curves"][RAW]["psnr"][-1] for run in runs])),
            "ssim": float(np.mean([run["curves"][RAW]["ssim"][-1] for run in runs])),
            "seeds": len(runs),
        }
        for image, runs in by_image.items()
    }


def summary(args) -> None:
    table = {}
    for kind in KINDS:
        rows = [row for row in read_lines(Path(args.pieces)) if row["dataset"] == kind]
        if not rows:
            continue
        s2s = s2s_finals(kind, rows[0]["side"])
        paired = [row for row in rows if row["image_id"] in s2s]
        scored = paired or rows  # quality over the images S2S+ has too, so every PSNR is of the same images
        zsn2n = {
            row["image_id"]: float(np.mean([row["methods"][f"zsn2n seed {seed}"]["psnr"] for seed in ZSN2N_SEEDS]))
            for row in rows
        }
        entry = {
            "images": len(rows),
            "image_ids": [row["image_id"] for row in rows],
            "s2s_images": len(paired),
            "s2s_seeds": min((s2s[row["image_id"]]["seeds"] for row in paired), default=0),
            "side": rows[0]["side"],
            "noisy_psnr": float(np.mean([row["noisy_psnr"] for row in scored])),
            "quality_images": [row["image_id"] for row in scored],
            "methods": {
                "ZS-N2N": {
                    "psnr": float(np.mean([zsn2n[row["image_id"]] for row in scored])),
                    "ssim": float(np.mean([row["methods"]["zsn2n seed 0"]["ssim"] for row in scored])),
                    "seconds": float(
                        np.mean([row["methods"][f"zsn2n seed {s}"]["seconds"] for row in rows for s in ZSN2N_SEEDS])
                    ),
                    "seed_spread_db": float(
                        np.sqrt(
                            np.mean(
                                [
                                    np.var([row["methods"][f"zsn2n seed {s}"]["psnr"] for s in ZSN2N_SEEDS], ddof=1)
                                    for row in rows
                                ]
                            )
                        )
                    ),
                },
                "CBM3D": {
                    "psnr": float(np.mean([row["methods"]["cbm3d"]["psnr"] for row in scored])),
                    "ssim": float(np.mean([row["methods"]["cbm3d"]["ssim"] for row in scored])),
                    "seconds": float(np.mean([row["methods"]["cbm3d"]["seconds"] for row in rows])),
                },
                "S2S+ (800 steps, 50 passes)": {
                    "psnr": float(np.mean([s2s[row["image_id"]]["psnr"] for row in paired])) if paired else None,
                    "ssim": float(np.mean([s2s[row["image_id"]]["ssim"] for row in paired])) if paired else None,
                    "seconds": float(np.mean([row["s2s_timing"]["seconds"] for row in rows])),
                },
                "S2S+ (paper protocol, projected)": {
                    "psnr": None,
                    "ssim": None,
                    "seconds": float(np.mean([row["s2s_timing"]["paper_protocol_seconds"] for row in rows])),
                },
            },
        }
        reference = [s2s[row["image_id"]]["psnr"] for row in paired]
        entry["rule_vs_s2s"] = {
            "ZS-N2N": paired_rule([zsn2n[row["image_id"]] for row in paired], reference),
            "CBM3D": paired_rule([row["methods"]["cbm3d"]["psnr"] for row in paired], reference),
        }
        entry["zsn2n_time_fraction_of_s2s"] = (
            entry["methods"]["ZS-N2N"]["seconds"] / entry["methods"]["S2S+ (800 steps, 50 passes)"]["seconds"]
        )
        table[kind] = entry
        print(
            f"\n{KINDS[kind]}: {entry['images']} crops of {entry['side']}² (seconds over all; PSNR/SSIM over the "
            f"{len(scored)} with S2S+ read-outs, {entry['s2s_seeds']}+ seeds each); noisy {entry['noisy_psnr']:.2f} dB"
        )
        print(f"  {'method':<34} {'PSNR':>7} {'SSIM':>7} {'s/image':>9}")
        for name, value in entry["methods"].items():
            psnr = f"{value['psnr']:7.2f}" if value["psnr"] is not None else f"{'–':>7}"
            ssim = f"{value['ssim']:7.4f}" if value["ssim"] is not None else f"{'–':>7}"
            print(f"  {name:<34} {psnr} {ssim} {value['seconds']:9.1f}")
        for name, result in entry["rule_vs_s2s"].items():
            print(f"  {name} − S2S+: {rule_line(result)}")
        print(
            f"  ZS-N2N seed spread {entry['methods']['ZS-N2N']['seed_spread_db']:.3f} dB; its time is "
            f"{entry['zsn2n_time_fraction_of_s2s']:.2f} of S2S+'s at 800 steps"
        )
    Path(args.json).write_text(json.dumps({"kinds": table}, indent=2))
    print(f"wrote {args.json}")


def demo_timing(args) -> None:
    """The built-in demo at its own settings (search_spaces/demo.yaml `paper:`): seconds per image of
    ZS-N2N and of S2S+, each image through the runner's task, one thread, in this one process."""
    import torch

    from s2s_sweep.configs import load_space, space_file_for

    torch.set_num_threads(args.threads)
    config = S2SConfig(**load_space(space_file_for("demo")).paper, precision="fp32")
    rows = []
    for image_id, noisy, clean in open_dataset("demo"):
        row = {"image_id": image_id}
        for name in ("zsn2n", "s2s+"):
            row[name] = timed(image_id, noisy, clean, Method(name, config), None)
        rows.append(row)
        print(
            f"demo {image_id}: "
            + " ".join(f"{n} {row[n]['psnr']:.2f} dB {row[n]['seconds']:.1f} s" for n in ("zsn2n", "s2s+")),
            flush=True,
        )
    seconds = {name: float(np.mean([row[name]["seconds"] for row in rows])) for name in ("zsn2n", "s2s+")}
    result = {
        "settings": {"s2s+": Method("s2s+", config).settings, "zsn2n": Method("zsn2n", config).settings},
        "images": rows,
        "seconds_per_image": seconds,
        "zsn2n_time_fraction_of_s2s": seconds["zsn2n"] / seconds["s2s+"],
        "psnr": {name: float(np.mean([row[name]["psnr"] for row in rows])) for name in ("zsn2n", "s2s+")},
    }
    print(
        f"demo: ZS-N2N {seconds['zsn2n']:.1f} s, S2S+ {seconds['s2s+']:.1f} s per image: "
        f"{result['zsn2n_time_fraction_of_s2s']:.2f} of S2S+'s time"
    )
    (RESULTS / "bench_peers_demo.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = kinds_parser(__doc__, images=8, side=96)
    parser.add_argument("--timing-steps", type=int, default=40, help="S2S+ steps timed per crop, then projected")
    parser.add_argument("--timing-passes", type=int, default=10, help="S2S+ passes timed per crop, then projected")
    parser.add_argument("--pieces", default=str(RESULTS / "bench_peers.jsonl"))
    parser.add_argument("--json", default=str(RESULTS / "bench_peers.json"))
    parser.add_argument("--demo", action="store_true", help="run: time the built-in demo at its settings instead")
    args = parser.parse_args()
    if args.command == "run":
        demo_timing(args) if args.demo else run(args)
    else:
        summary(args)


if __name__ == "__main__":
    main()
