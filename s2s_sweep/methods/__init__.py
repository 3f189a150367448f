"""Denoising methods behind one signature: what one Ray task computes for one image.

    method = Method("cbm3d")                     # or Method("s2s+", S2SConfig(...), RunSettings(init="warm"))
    row_values = denoise_image("0001", noisy, clean, method, sigma=25.0, cpus=1)

Self2Self+ (s2s.py) is the method this project runs and searches; beside it, on the user's own
dataset with the same runner, rows, MLflow experiment and report: the classic baselines the paper
compares with (cbm3d.py, nlm.py, wavelet.py) and a fast learned zero-shot peer (zsn2n.py). A new
method is one file with a `DenoisingMethod` subclass (base.py) and one line in REGISTRY below.
Every output becomes 8-bit by the run's `quantize` and is scored the same way.
"""

import json
from dataclasses import dataclass, field

import ray

from model.config import S2SConfig
from model.memory import MB, Plan, peak_rss_bytes
from s2s_sweep.configs import ConfigError
from s2s_sweep.images import to_uint8
from s2s_sweep.methods.base import ADDED_LATER, DenoisingMethod, device_type, estimate_noise_sigma, settings_hash
from s2s_sweep.methods.cbm3d import CBM3D
from s2s_sweep.methods.nlm import NLMeans
from s2s_sweep.methods.s2s import SelfToSelfPlus, load_seed, train_seed_task
from s2s_sweep.methods.wavelet import Wavelet
from s2s_sweep.methods.zsn2n import ZeroShotNoise2Noise
from s2s_sweep.metrics import calculate_psnr, calculate_ssim, calculate_ssim_3d
from s2s_sweep.run_settings import RunSettings, split

REGISTRY: dict[str, DenoisingMethod] = {
    method.name: method
    for method in (
        SelfToSelfPlus(),  # the first is the default
        CBM3D(),
        NLMeans(),
        Wavelet(),
        ZeroShotNoise2Noise(),
    )
}
METHODS = tuple(REGISTRY)
DEFAULT_METHOD = METHODS[0]
LABELS = {name: method.label for name, method in REGISTRY.items()}
# the rows' columns of method settings; a method fills those it has (row_values), the rest stay null
SETTINGS_COLUMNS = ("p", "lambda_iqa", "passes", "seed", "ema_decay", "lr_decay", "steps", "init")

__all__ = ["METHODS", "DEFAULT_METHOD", "LABELS", "REGISTRY", "Method", "denoise_image", "estimate_noise_sigma"]
__all__ += ["load_seed", "train_seed_task", "settings_hash"]


@dataclass(frozen=True)
class Method:
    """A method by name and the settings it was given (an S2SConfig and the run's RunSettings:
    S2S+ takes all of them, the others the fields their `settable` names)."""

    name: str = DEFAULT_METHOD
    config: S2SConfig = field(default_factory=S2SConfig)
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self):
        if self.name not in REGISTRY:
            raise ConfigError(f"--method {self.name}: expected one of {', '.join(METHODS)}")

    @property
    def spec(self) -> DenoisingMethod:
        return REGISTRY[self.name]

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def description(self) -> str:
        return self.spec.describe(self.config)

    @property
    def settings(self) -> dict:
        """What the run's config.yaml holds and its hash covers."""
        return self.spec.settings(self.config, self.run)

    @classmethod
    def from_settings(cls, settings: dict) -> "Method":
        """The inverse of `settings` (a config.yaml without `method` is an S2S+ run)."""
        values = {**ADDED_LATER, **settings}  # a config.yaml older than a setting ran at its ADDED_LATER value
        name = values.pop("method", DEFAULT_METHOD)
        return cls(name, *split(REGISTRY[name].config_from(values) if name in REGISTRY else {}))

    @property
    def hash(self) -> str:
        """Hash of the requested settings that change results (not device, logging or weights location)."""
        return settings_hash(self.settings)

    def row_hash(self, precision: str | None) -> str:
        """Hash of what made a row: a learned method's with the precision it actually used instead of "auto"."""
        return (
            settings_hash({**self.settings, "precision": precision}) if self.spec.learned and precision else self.hash
        )

    def run_name(self, dataset: str, run_id: str) -> str:
        """What the MLflow UI's run list shows."""
        return f"{dataset} {self.description} {run_id}"

    def image_seed(self, image_id: str) -> int | None:
        """The seed image `image_id` trains with (RunSettings.image_seed); None for a method without a seed."""
        return self.run.image_seed(self.config.seed, image_id) if "seed" in self.spec.settable else None

    def row_values(self) -> dict:
        """The table's settings columns."""
        return {
            **dict.fromkeys(SETTINGS_COLUMNS),
            **self.spec.row_values(self.config, self.run),
            "method": self.name,
            "quantize": self.run.quantize,
            "settings": json.dumps(self.settings, sort_keys=True),
        }

    def check_installed(self) -> None:
        self.spec.check_installed()

    def plan(self, height: int, width: int, budget_bytes: int, device_type: str, name: str) -> Plan:
        """Memory of one image: S2S+'s crops and tiles fitted to the budget; another method's estimate."""
        return self.spec.plan(self.config, height, width, budget_bytes, device_type, name)

    def fitted(self, plan: Plan) -> "Method":
        """With the plan's training crops and inference tiles, where the method uses them."""
        return Method(self.name, self.spec.fitted(self.config, plan), self.run)


def denoise_image(
    image_id: str,
    noisy,
    clean,
    method: Method,
    sigma: float | None,
    cpus: float,
    initial_state: dict | None = None,
) -> dict:
    """The work of one Ray task: denoise, score the input and the output. `sigma`: the dataset's
    true noise σ (0..255), None to estimate it (classic baselines); `initial_state`: the seed
    network of a warm start (S2S+). Plain function, so it also runs without Ray."""
    import torch  # here, not at the top: a run's driver imports this module and never trains

    torch.set_num_threads(max(1, int(cpus)))
    if torch.cuda.is_available():  # peak_memory_mb below is this image's own peak
        torch.cuda.reset_peak_memory_stats()
    values, denoised = method.spec.denoise(
        noisy, method.run.image_config(method.config, image_id), sigma, initial_state
    )
    on_cuda = device_type(values["device"]) == "cuda"
    denoised = to_uint8(denoised, method.run.quantize)  # the saved PNG, and what the metrics score
    scored = clean is not None
    return {
        **values,
        "image_id": image_id,
        "denoised": denoised,
        "psnr": calculate_psnr(denoised, clean) if scored else None,
        "ssim": calculate_ssim(denoised, clean) if scored else None,
        "noisy_psnr": calculate_psnr(noisy, clean) if scored else None,
        "noisy_ssim": calculate_ssim(noisy, clean) if scored else None,
        "ssim_3d": calculate_ssim_3d(denoised, clean) if scored else None,
        "noisy_ssim_3d": calculate_ssim_3d(noisy, clean) if scored else None,
        # measured: GPU memory on CUDA; else the worker's peak RSS, a lifetime maximum (an upper bound once it ran
        # larger images)
        "peak_memory_mb": (torch.cuda.max_memory_allocated() if on_cuda else peak_rss_bytes()) / MB,
        "parameters": method.spec.parameter_count(noisy.shape[2]),
        "node": ray.util.get_node_ip_address() if ray.is_initialized() else "local",
        "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local",
    }
