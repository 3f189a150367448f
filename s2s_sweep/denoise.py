"""Denoise one image with Self2Self+.

    python -m s2s_sweep.denoise NOISY.png -o OUT.png [--clean CLEAN.png] [--p 0.4 --steps 4000 ...]
    python -m s2s_sweep.denoise --demo -o demo.png --steps 400 --passes 100
    python -m s2s_sweep.denoise NOISY.png -o OUT.png --init outputs/DATASET/RUN_ID/seed.pt   # warm start

`--demo` uses the first built-in demo image (a scikit-image photograph with seeded σ = 25
noise) and its clean original, so it runs with no download.
"""

import argparse
import sys
import time
import traceback

from tqdm import tqdm

from model.config import S2SConfig
from model.denoiser import denoise
from s2s_sweep.configs import ConfigError
from s2s_sweep.datasets import open_dataset
from s2s_sweep.errors import EXIT_BAD_INPUT, EXIT_BUG, USER_ERRORS
from s2s_sweep.images import ImageError, read_image, to_uint8, write_png
from s2s_sweep.methods import load_seed
from s2s_sweep.metrics import calculate_psnr, calculate_ssim
from s2s_sweep.run_settings import QUANTIZE, RunSettings
from s2s_sweep.store import read_file

DEFAULTS, RUN_DEFAULTS = S2SConfig(), RunSettings()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m s2s_sweep.denoise", description="Denoise one image with Self2Self+."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("noisy", nargs="?", help="noisy image (PNG/JPEG/TIFF, 8/16-bit, gray or RGB)")
    source.add_argument("--demo", action="store_true", help="use the built-in demo image and its clean reference")
    parser.add_argument("-o", "--output", required=True, help="where to write the denoised 8-bit PNG")
    parser.add_argument("--clean", help="clean reference: prints PSNR/SSIM of the input and the result")
    parser.add_argument("--p", type=float, default=DEFAULTS.p, help="drop probability (default %(default)s)")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps, help="training steps (default %(default)s)")
    parser.add_argument(
        "--lambda-iqa",
        type=float,
        default=DEFAULTS.lambda_iqa,
        help="IQA loss weight; 0 disables it (default %(default)s)",
    )
    parser.add_argument(
        "--passes", type=int, default=DEFAULTS.passes, help="inference dropout passes (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda or cuda:N (default %(default)s)")
    parser.add_argument("--precision", default=DEFAULTS.precision, choices=["auto", "fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument(
        "--quantize",
        default=RUN_DEFAULTS.quantize,
        choices=QUANTIZE,
        help="float output to 8 bits for the PNG and metrics (default %(default)s; floor: as the authors' code)",
    )
    parser.add_argument(
        "--iqa-weights", help="TORCH_HOME-style folder holding hub/checkpoints/resnet18-*.pth and hub/pyiqa/P2P_*.pth"
    )
    parser.add_argument(
        "--init", help="start from a saved seed network (a run's seed.pt: a warm start) instead of a fresh one"
    )
    parser.add_argument(
        "--warm-steps",
        type=int,
        default=RUN_DEFAULTS.warm_steps,
        help="training steps from the seed (default: steps // 2)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, 2 for bad input (one line: the file, the setting, the memory budget), 70 for a bug (traceback)."""
    args = parse_args(argv)
    try:
        try:
            config = S2SConfig(
                p=args.p,
                steps=args.steps,
                lambda_iqa=args.lambda_iqa,
                passes=args.passes,
                seed=args.seed,
                device=args.device,
                precision=args.precision,
                compile=args.compile,
                iqa_weights=args.iqa_weights,
            )
            run_settings = RunSettings(quantize=args.quantize, init=args.init or "cold", warm_steps=args.warm_steps)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        initial_state = load_seed(read_file(args.init, "--init"), args.init) if args.init else None
        if args.demo:
            _, noisy, clean = next(iter(open_dataset("demo")))
        else:
            noisy = read_image(args.noisy)
            clean = read_image(args.clean) if args.clean else None
        if clean is not None and clean.shape != noisy.shape:
            raise ImageError(f"{args.clean}: shape {clean.shape} differs from the noisy image's {noisy.shape}")

        started = time.perf_counter()
        config = config.replace(steps=run_settings.image_steps(config.steps))  # one image: --seed is its own
        with (
            tqdm(total=config.steps, desc="train", unit="step") as train_bar,
            tqdm(total=config.passes, desc="infer", unit="pass") as infer_bar,
        ):

            def on_step(step: int, steps: int, loss: float) -> None:
                train_bar.update(step - train_bar.n)
                train_bar.set_postfix(loss=f"{loss:.5f}")

            def on_pass(done: int, passes: int) -> None:
                infer_bar.total = passes  # passes x tiles on large images
                infer_bar.update(done - infer_bar.n)

            result = denoise(noisy, config, on_step, on_pass, initial_state)
        try:
            write_png(args.output, result.denoised, run_settings.quantize)
        except OSError as error:
            raise ImageError(f"{args.output}: cannot write the result ({error})") from None
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:
        traceback.print_exc()
        print("internal error: please report it with the traceback above", file=sys.stderr)
        return EXIT_BUG

    plan = result.plan
    training = f"{plan.batch} crops of {plan.crop}x{plan.crop} per step" if plan.crop else "whole image"
    inference = f"tiles of {plan.tile}x{plan.tile}" if plan.tile else "whole image"
    print(
        f"wrote {args.output} ({time.perf_counter() - started:.1f} s on {result.device}; training: {training}; "
        f"inference: {inference}; predicted peak {plan.peak_bytes / 2**20:,.0f} MB)"
    )
    if clean is not None:
        print(f"noisy   PSNR {calculate_psnr(noisy, clean):6.2f} dB  SSIM {calculate_ssim(noisy, clean):.4f}")
        denoised = to_uint8(result.denoised, run_settings.quantize)  # what was written
        print(f"S2S+    PSNR {calculate_psnr(denoised, clean):6.2f} dB  SSIM {calculate_ssim(denoised, clean):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
