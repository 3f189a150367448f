"""What a denoising method is to the runner, the report and the tables: one small protocol.

A method is one file in this package holding a subclass of `DenoisingMethod`, plus one line in
`REGISTRY` (s2s_sweep/methods/__init__.py). The networks and one-image training of learned
methods live in model/; a file here says how the runner runs, plans, records and labels it.
Every method takes an `S2SConfig` (model/config.py) for the settings all methods share (the memory
budget, the device, the seed) and the run's `RunSettings` (s2s_sweep/run_settings.py: how the
output becomes 8-bit, how a network starts); S2S+ takes all of both.
"""

import hashlib
import json
import time

import numpy as np

from model.config import S2SConfig
from model.memory import MB, DoesNotFit, Plan
from s2s_sweep.run_settings import RUN_SETTINGS, RunSettings

UNUSED_SETTINGS = ("device", "log_every", "iqa_weights")  # where and how verbosely it runs: results do not change
SHARED_SETTABLE = ("quantize", "memory_mb")  # what `--set` may give any method
# settings added after runs were recorded, at the value those runs ran with: a method's settings leave a key out
# at that value (so such runs keep their hash), and a saved config.yaml without it reads as that value (a resume
# goes on as the run began)
ADDED_LATER = {
    "ema_decay": 0.0,
    "lr_decay": 0.0,
    "seeding": "run",  # before 2026-11-30 every image trained with the run's seed (run_settings.py)
}


def recorded_settings(values: dict) -> dict:
    """`values` without the keys at their ADDED_LATER value."""
    return {key: value for key, value in values.items() if ADDED_LATER.get(key, object()) != value}


def device_type(device: str) -> str:
    """ "cuda" or "cpu" from a result's device string ("cuda:0", "cpu"), without importing torch."""
    return "cuda" if device.startswith("cuda") else "cpu"


def settings_hash(settings: dict) -> str:
    keep = {k: v for k, v in settings.items() if k not in UNUSED_SETTINGS}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


class DenoisingMethod:
    """A denoiser of one image and the settings that change its results. Defaults fit a method
    with fixed settings (`fixed`) that runs on a CPU over the whole image."""

    name: str  # as given to --method and recorded in the rows' `method` column
    label: str  # as tables and MLflow show it
    fixed: dict = {}  # its settings that no flag changes (recorded in config.yaml and hashed)
    settable: tuple[str, ...] = SHARED_SETTABLE  # what `--set` may give it
    learned = False  # trains a network: takes a GPU where the cluster has one
    published: dict[str, tuple[float, float]] = {}  # dataset -> (PSNR dB, SSIM) the Self2Self+ paper prints for it
    protocol: str = ""  # how this implementation may differ from the published one, for the report
    quoted_speed: tuple[
        dict, ...
    ] = ()  # published timings the report's efficiency table quotes: source, device, s/image

    def settings(self, config: S2SConfig, run: RunSettings) -> dict:
        """What the run's config.yaml holds and its hash covers."""
        values = {key: getattr(run if key in RUN_SETTINGS else config, key) for key in self.recorded}
        return {"method": self.name, **recorded_settings(values), **self.fixed}

    @property
    def recorded(self) -> tuple[str, ...]:
        """The S2SConfig and RunSettings fields its settings record (memory_mb changes where, not what)."""
        return tuple(key for key in self.settable if key != "memory_mb")

    def config_from(self, values: dict) -> dict:
        """The inverse of `settings` (without `method`): the run settings it records."""
        return {key: values[key] for key in self.recorded if key in values}

    def describe(self, config: S2SConfig) -> str:
        """The method and the settings that tell its runs apart, for tables and MLflow's run list."""
        return self.label

    def row_values(self, config: S2SConfig, run: RunSettings) -> dict:
        """The table's settings columns of this method (the others stay null)."""
        return {}

    def parameter_count(self, channels: int) -> int | None:
        """Trained parameters of its network for an image of `channels` (None: nothing is trained)."""
        return None

    def check_installed(self) -> None:
        """Raise a ConfigError naming what to install when an optional package is missing."""

    def peak_bytes(self, height: int, width: int, device_type: str = "cpu") -> int:
        """Predicted peak memory of one image (RAM on CPU, GPU memory on CUDA)."""
        raise NotImplementedError

    def plan(self, config: S2SConfig, height: int, width: int, budget_bytes: int, device_type: str, name: str) -> Plan:
        """Memory of one image: by default the whole image at once, or DoesNotFit."""
        peak = self.peak_bytes(height, width, device_type)
        if peak > budget_bytes:
            raise DoesNotFit(
                f"{name}: {height}x{width} pixels needs about {peak / MB:,.0f} MB for {self.label}, more than the "
                f"{budget_bytes / MB:,.0f} MB budget"
            )
        return Plan(crop=0, batch=1, tile=0, train_bytes=0, infer_bytes=peak, host_bytes=peak)

    def fitted(self, config: S2SConfig, plan: Plan) -> S2SConfig:
        """The config with the plan's crops and tiles where the method uses them."""
        return config

    def denoise(
        self, noisy: np.ndarray, config: S2SConfig, sigma: float | None, initial_state: dict | None
    ) -> tuple[dict, np.ndarray]:
        """(row values: seconds, device, memory…; the denoised float image in [0, 1]). `config`: the
        image's own (a warm start's steps, RunSettings.image_config); `sigma`: the dataset's true
        noise σ (0..255) or None; `initial_state`: a warm start's seed network."""
        raise NotImplementedError

    def protocol_notes(self, ok_rows, settings: dict, paper: dict) -> list[str]:
        """How a run's protocol differs from the paper's (`paper`: its search space's paper settings)."""
        return [self.protocol] if self.protocol else []


def estimate_noise_sigma(noisy: np.ndarray) -> float:
    """Noise σ on the 0..255 scale, estimated from the image alone (mean over its channels)."""
    from skimage.restoration import estimate_sigma

    return 255.0 * float(np.mean(estimate_sigma(noisy, channel_axis=-1)))


class ClassicBaseline(DenoisingMethod):
    """A classical denoiser that is told the noise σ: the dataset's true σ where it is known
    (synthetic Gaussian noise), else estimated from each noisy image (the wavelet median absolute
    deviation of skimage.restoration.estimate_sigma); each row records the σ and where it came from."""

    # Peak RAM per pixel of an RGB image over the worker's own footprint (~650 MB with torch
    # imported), measured with peak_rss_bytes at 256² and 512², with a margin.
    bytes_per_pixel: int
    base_bytes = 700 * MB

    def peak_bytes(self, height: int, width: int, device_type: str = "cpu") -> int:
        return self.base_bytes + self.bytes_per_pixel * height * width

    def denoise_with_sigma(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
        """Denoised float image of a (H, W, C) float image in [0, 1] with noise σ on the 0..1 scale."""
        raise NotImplementedError

    def denoise(self, noisy, config, sigma, initial_state):
        source = "dataset" if sigma is not None else "estimated"
        sigma = sigma if sigma is not None else estimate_noise_sigma(noisy)
        started = time.perf_counter()
        denoised = np.clip(self.denoise_with_sigma(noisy, sigma / 255.0), 0.0, 1.0).astype(np.float32)
        values = {
            "train_seconds": 0.0,
            "inference_seconds": time.perf_counter() - started,
            "device": "cpu",
            "noise_sigma": sigma,
            "sigma_source": source,
            "memory_mb": self.peak_bytes(*noisy.shape[:2]) / MB,
        }
        return values, denoised

    def protocol_notes(self, ok_rows, settings, paper):
        notes = ["σ estimated from each image"] if "estimated" in set(ok_rows["sigma_source"].dropna()) else []
        return notes + super().protocol_notes(ok_rows, settings, paper)
