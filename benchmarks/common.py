"""What the benchmarks share: the noise kinds they measure, centre crops, step lists, their pieces
files, and the rule by which one setting is called better, equal or worse than another.

The rule (s2s_sweep/rule.py, issue "tell better from worse"), stated before measuring: paired over
the same images, the lower end of the 95% interval of the mean PSNR difference (candidate −
reference) is above −0.1 dB on each kind. An image's value is the mean over its seeds where there are several, so
the pairs are images, not trainings.
"""

import argparse
import json
from pathlib import Path

import numpy as np

# the rule lives with the product, which applies it to a sweep's best too; the benchmarks take it from here
from s2s_sweep.rule import paired_rule  # noqa: F401
from s2s_sweep.run_settings import RunSettings

KINDS = {"cbsd68-25": "synthetic σ=25", "polyu": "real (PolyU)"}
PAPER_STEPS, PAPER_PASSES, PAPER_LAMBDA_IQA = 4000, 500, 2e-8  # the paper's CBSD68 protocol per image, for projections
QUANTIZE = RunSettings().quantize  # outputs are scored as a run saves them, quantized its default way
RAW = "raw"  # bench_variance's plain read-out (the weights as they are), which bench_peers and bench_layout pair with


def read_lines(path: Path) -> list[dict]:
    """The rows of a JSON-lines pieces file; none while it does not exist."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def seeding_of(row: dict) -> str:
    """How a piece's images were seeded: "image" (each its own, as a run does since docs/variance.md's
    seeding rule) or "run" (one seed for every image; rows from before the field recorded none)."""
    return row.get("seeding", "run")


def one_seeding(rows: list[dict]) -> tuple[list[dict], str]:
    """The rows of one seeding protocol, for a summary that pairs rows by image: the per-image one
    where there are any such rows, else the one-seed one."""
    seeding = "image" if any(seeding_of(row) == "image" for row in rows) else "run"
    return [row for row in rows if seeding_of(row) == seeding], seeding


def centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    """The central side x side piece of an (H, W, C) image (all of a shorter side); side 0 keeps the whole image."""
    if side <= 0:
        return image
    top, left = max(0, (image.shape[0] - side) // 2), max(0, (image.shape[1] - side) // 2)
    return image[top : top + side, left : left + side]


def steps_list(text: str) -> list[int]:
    """'100,200,400' -> [100, 200, 400], sorted."""
    return sorted(int(step) for step in text.split(","))


def rule_line(result: dict) -> str:
    """One line of the rule's verdict, for a benchmark's table."""
    if result["n"] < 2:
        return f"{result['mean_db']:+.3f} dB over {result['n']} image: an interval needs 2 or more; rule does not pass"
    low, high = result["ci95_db"]
    needed = (
        "no n would show it"
        if result["images_needed"] is None
        else f"n for a pass at this spread: {result['images_needed']}"
    )
    verdict = "passes" if result["passes"] else "does not pass"
    return f"{result['mean_db']:+.3f} dB [{low:+.3f}, {high:+.3f}] over {result['n']} images: rule {verdict} ({needed})"


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def objective_spearman(frame) -> dict:
    """The held-out score's Spearman rank correlation with PSNR over every (p, steps) of each
    image of one kind's landscape table (pandas); their mean and minimum."""
    per_image = {image_id: spearman(rows["psnr"], rows["heldout_psnr"]) for image_id, rows in frame.groupby("image_id")}
    return {
        "mean": float(np.mean(list(per_image.values()))),
        "min": float(min(per_image.values())),
        "per_image": per_image,
    }


def add_seeding_option(parser: argparse.ArgumentParser) -> None:
    """--seeding: how the images of a benchmark's fresh run are seeded ("image": each its own, as a run does)."""
    parser.add_argument(
        "--seeding", choices=["image", "run"], default="image", help="image: each image its own seed, as a run"
    )


def kinds_parser(description: str, images: int, side: int) -> argparse.ArgumentParser:
    """The command line every per-kind benchmark shares: `run` (appends resumable pieces; one
    process per kind on a 2-core machine) or `summary` (prints the table, writes the JSON)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "summary"])
    parser.add_argument("--data-root")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--images", type=int, default=images, help="the first N images of each kind")
    parser.add_argument("--side", type=int, default=side, help="centre crops of this side; 0 = whole images")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (one process per kind on a 2-core machine)"
    )
    parser.add_argument("--device", default="cpu")
    return parser


def shard_of(text: str) -> tuple[int, int]:
    """--shard I/N: this process takes every N-th item of its work (a p, an image) from the I-th (0-based),
    so that N processes share one kind on a machine of N cores."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return int(index), int(count)


def add_shard_option(parser: argparse.ArgumentParser, item: str) -> None:
    """--shard I/N (shard_of), for a benchmark whose work on a kind splits by `item` ("p", "image")."""
    parser.add_argument(
        "--shard",
        type=shard_of,
        default=(0, 1),
        help=f"I/N: process I of N sharing a kind (each takes every N-th {item})",
    )


def whole_grid(frame, p_count: int):
    """Per row of a landscape frame: whether its image has the whole p grid (`p_count` values of p);
    a table still being built has images that do not, which the summary and the replay leave out."""
    return frame.groupby(["dataset", "image_id"])["p"].transform("nunique") == p_count
