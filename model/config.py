"""Hyperparameters and run settings of one Self2Self+ training and inference of one image.

What a dataset run adds (how each image's network starts, how its output becomes 8-bit) is
s2s_sweep/run_settings.py: model/ never reads it."""

import dataclasses
import functools
from dataclasses import dataclass

# Paper Table 1 and "Implementation Details"; λ_IQA and 500 passes for every dataset.
PAPER_DEFAULTS = {
    "cbsd68": {"p": 0.4, "steps": 4000},
    "sidd": {"p": 0.9, "steps": 1000},
    "polyu": {"p": 0.7, "steps": 5000},
}

# The device types on which `precision: auto` means bf16 autocast (where native_bf16 holds): those where
# benchmarks/bench_precision.py, measured natively on >= 16 images per kind, passed the rule on every
# kind. Its committed result's `auto_bf16` (tests/test_bench_rule.py holds the two equal). None yet:
# the only native measurement (an AVX512-BF16 CPU, 8 images per kind) did not pass on PolyU (docs/benchmarks.md).
BF16_AUTO: frozenset[str] = frozenset()


def is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_fields(settings, checks: dict[str, tuple[bool, str]]) -> None:
    """Raise ValueError naming the first field of `settings` whose check (ok, what was expected) fails."""
    for field, (ok, expected) in checks.items():
        if not ok:
            raise ValueError(f"{field}: expected {expected}, got {getattr(settings, field)!r}")


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether this machine computes bf16 natively: a CUDA GPU with bf16 units (Ampere and later;
    emulation does not count), or a CPU with AVX512-BF16 or AMX-BF16 (torch's CPU capability probe).
    What cannot be detected counts as no. Elsewhere bf16 is emulated, and slower than fp32."""
    import torch

    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3 has no emulation and no such argument
            return torch.cuda.is_bf16_supported()
    probe = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.8
    capabilities = probe() if probe else {}
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


@dataclass(frozen=True)
class S2SConfig:
    # the method (paper defaults for CBSD68)
    p: float = 0.4  # Bernoulli drop probability of the input and of every decoder dropout
    steps: int = 4000  # training steps, one freshly masked instance each
    lambda_iqa: float = 2e-8  # weight of the PaQ-2-PiQ loss; 0 skips the IQA model entirely
    passes: int = 500  # dropout passes averaged at inference
    lr: float = 4e-4  # Adam, betas (0.9, 0.999)
    # read out a bias-corrected moving average of the weights (model/averaging.py); 0 = the raw weights, as the paper
    ema_decay: float = 0.0
    # the learning rate falls linearly over this last fraction of the steps (the final step takes lr / (n + 1) of n
    # decayed steps); 0 = held, as the paper. Tied to the final step, so one training cannot be read out early at it
    lr_decay: float = 0.0
    seed: int = 0
    # where and how it runs
    device: str = "auto"  # "auto" picks CUDA when present, else "cpu"; or "cpu", "cuda", "cuda:1"
    precision: str = "auto"  # "fp32", "bf16" (autocast), "auto" = fp32 until bf16 is measured equal (precision_on)
    # memory layout: the same arithmetic in another summation order (rounding differences grow over a training);
    # faster on the CPU it was chosen on, slower to train on an AVX2 CPU (docs/benchmarks.md)
    channels_last: bool = True
    compile: bool = False  # torch.compile the network (slow first step, faster after)
    inference_memory_mb: int = 0  # activation budget of one batch of passes; 0 = automatic
    # large images (model/memory.py decides; 0 = automatic): above 512x512 pixels training
    # takes random crops and inference runs over overlapping tiles, so memory is bounded
    crop_size: int = 0  # side of the training crops (a multiple of 32, >= 64)
    crop_batch: int = 0  # crops per training step
    tile_size: int = 0  # side of the inference tiles (a multiple of 32, >= 192)
    memory_mb: int = 0  # memory budget of one image (RAM on CPU, GPU memory on CUDA); 0 = what is free
    log_every: int = 50  # steps between loss read-outs (each one syncs the device)
    iqa_weights: str | None = None  # TORCH_HOME-style folder with the IQA weights; None = torch's hub dir

    def __post_init__(self):
        checks = {
            "p": (is_number(self.p) and 0.0 < self.p < 1.0, "a probability in (0, 1)"),
            "steps": (is_integer(self.steps) and self.steps >= 1, "an integer >= 1"),
            "lambda_iqa": (is_number(self.lambda_iqa) and self.lambda_iqa >= 0.0, "a number >= 0"),
            "passes": (is_integer(self.passes) and self.passes >= 1, "an integer >= 1"),
            "lr": (is_number(self.lr) and self.lr > 0.0, "a number > 0"),
            "ema_decay": (
                is_number(self.ema_decay) and 0.0 <= self.ema_decay < 1.0,
                "a number in [0, 1) (0 = the raw weights)",
            ),
            "lr_decay": (is_number(self.lr_decay) and 0.0 <= self.lr_decay <= 1.0, "a fraction in [0, 1] (0 = held)"),
            "seed": (is_integer(self.seed) and self.seed >= 0, "an integer >= 0"),
            "device": (
                isinstance(self.device, str)
                and (self.device in ("auto", "cpu", "cuda") or self.device.removeprefix("cuda:").isdigit()),
                "auto, cpu, cuda or cuda:N",
            ),
            "precision": (self.precision in ("auto", "fp32", "bf16"), "one of auto, fp32, bf16"),
            "channels_last": (isinstance(self.channels_last, bool), "true or false"),
            "compile": (isinstance(self.compile, bool), "true or false"),
            "inference_memory_mb": (
                is_integer(self.inference_memory_mb) and self.inference_memory_mb >= 0,
                "an integer >= 0 (0 = automatic)",
            ),
            "crop_size": (
                self.crop_size == 0
                or (is_integer(self.crop_size) and self.crop_size >= 64 and self.crop_size % 32 == 0),
                "0 (automatic) or a multiple of 32 >= 64",
            ),
            "crop_batch": (is_integer(self.crop_batch) and self.crop_batch >= 0, "an integer >= 0 (0 = automatic)"),
            "tile_size": (
                self.tile_size == 0
                or (is_integer(self.tile_size) and self.tile_size >= 192 and self.tile_size % 32 == 0),
                "0 (automatic) or a multiple of 32 >= 192",
            ),
            "memory_mb": (is_integer(self.memory_mb) and self.memory_mb >= 0, "an integer >= 0 (0 = what is free)"),
            "log_every": (is_integer(self.log_every) and self.log_every >= 1, "an integer >= 1"),
        }
        check_fields(self, checks)

    def precision_on(self, device_type: str) -> str:
        """The arithmetic actually used on a device. 'auto' is bf16 autocast where the hardware has it
        natively and benchmarks/bench_precision.py has shown it equal to fp32 by the rule on that
        device type (BF16_AUTO), fp32 elsewhere."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if device_type in BF16_AUTO and native_bf16(device_type) else "fp32"

    def replace(self, **changes) -> "S2SConfig":
        return dataclasses.replace(self, **changes)
