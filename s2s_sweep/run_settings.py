"""What a dataset run sets beyond the training and inference of one image (model/config.S2SConfig):
how each image's network starts, which seed each image trains with, and how every method's output
becomes 8-bit.

A run's settings travel as one flat mapping (its config.yaml, `--config`, `--set`, a sweep's
best_config.yaml); `split` is where that mapping becomes the one-image S2SConfig plus these,
`join` the way back.
model/ never reads them: the runner trains a warm start's seed and gives each image its steps,
the methods quantize what they return.
"""

import dataclasses
import hashlib
from dataclasses import dataclass

from model.config import S2SConfig, check_fields, is_integer

QUANTIZE = ("round", "floor")
SEEDING = ("image", "run")


def image_seed(seed: int, image_id: str) -> int:
    """The seed image `image_id` of a run seeded `seed` trains with under `seeding: image`: a stream of its
    own (images that share one share its noise: docs/variance.md), and the same in every run and sweep
    trial of that seed, so settings compared on one image keep their common random numbers."""
    digest = hashlib.sha256(f"{seed}/{image_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits: a seed every tool accepts


@dataclass(frozen=True)
class RunSettings:
    # how the float output becomes 8-bit for its PNG and metrics: "round", or "floor" as the authors' code saves
    quantize: str = "round"
    # warm starts (docs/warm-starts.md): "cold" (the paper: a fresh network per image); "warm" (a seed trained
    # `steps` on each of the dataset's first `warm_images`, in turn, then each image trains `warm_steps` from it);
    # or a saved seed's path
    init: str = "cold"
    warm_steps: int = 0  # training steps of each warm-started image; 0 = steps // 2
    warm_images: int = 1  # images the "warm" seed trains on, in turn
    # "image": each image trains with a seed of its own derived from the run's seed and its id (image_seed);
    # "run": every image with the run's seed, as runs recorded before 2026-11-30 did (same-size images then
    # share one mask and dropout stream and its noise: docs/variance.md)
    seeding: str = "image"

    def __post_init__(self):
        checks = {
            "quantize": (self.quantize in QUANTIZE, "round or floor"),
            "init": (isinstance(self.init, str) and bool(self.init), "cold, warm or the path of a saved seed network"),
            "warm_steps": (is_integer(self.warm_steps) and self.warm_steps >= 0, "an integer >= 0 (0 = steps // 2)"),
            "warm_images": (is_integer(self.warm_images) and self.warm_images >= 1, "an integer >= 1"),
            "seeding": (self.seeding in SEEDING, " or ".join(SEEDING)),
        }
        check_fields(self, checks)

    def image_steps(self, steps: int) -> int:
        """Training steps of one image of a run of `steps`: all of them from a fresh network,
        `warm_steps` from a seed."""
        return steps if self.init == "cold" else self.warm_steps or max(1, steps // 2)

    def image_seed(self, seed: int, image_id: str) -> int:
        """The seed image `image_id` of a run seeded `seed` trains with."""
        return image_seed(seed, image_id) if self.seeding == "image" else seed

    def image_config(self, config: S2SConfig, image_id: str) -> S2SConfig:
        """The one-image config image `image_id` of the run trains with: its steps and its seed."""
        return config.replace(steps=self.image_steps(config.steps), seed=self.image_seed(config.seed, image_id))

    def replace(self, **changes) -> "RunSettings":
        return dataclasses.replace(self, **changes)


RUN_SETTINGS = tuple(field.name for field in dataclasses.fields(RunSettings))


def split(values: dict) -> tuple[S2SConfig, RunSettings]:
    """A flat mapping of run settings as the one-image config and the run's own settings; an invalid
    value raises ValueError naming its field."""
    ours = {key: value for key, value in values.items() if key in RUN_SETTINGS}
    return S2SConfig(**{key: value for key, value in values.items() if key not in ours}), RunSettings(**ours)


def join(config: S2SConfig, run: RunSettings) -> dict:
    """The inverse of `split`: every setting as one flat mapping."""
    return {**dataclasses.asdict(config), **dataclasses.asdict(run)}
