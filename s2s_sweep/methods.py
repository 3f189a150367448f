"""What one Ray task computes for one image: Self2Self+ or a classic baseline, behind one signature.

    method = Method("cbm3d")                                    # or Method("s2s+", S2SConfig(...))
    row_values = denoise_image("0001", noisy, clean, method, sigma=25.0, cpus=1)

Baselines, so that S2S+ can be compared on the user's own dataset with the same runner, table and
MLflow experiment (the paper's Tables 2 and 3 compare against CBM3D):
- cbm3d: BM3D in an opponent colour space, `bm3d.bm3d_rgb` (the optional extra
  `pip install "s2s-sweep[baselines]"`); profile "np", the package's default.
- nlm: scikit-image's non-local means, h = 0.8 σ, 5 x 5 patches, 13 x 13 search window, fast mode.
- wavelet: scikit-image's BayesShrink, soft thresholds, σ rescaled per sub-band.
They take the noise σ: the dataset's true σ where it is known (synthetic Gaussian noise), else
estimated from each noisy image (skimage.restoration.estimate_sigma, the wavelet median absolute
deviation); each row records the σ and where it came from. Their float output becomes 8-bit by
the run's `quantize`, the same way as S2S+'s, and is scored the same way.
"""

import hashlib
import importlib.util
import io
import json
import pickle
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import ray
import torch

from model.config import S2SConfig
from model.denoiser import denoise, train_seed
from model.memory import MB, DoesNotFit, Plan, fit_memory, peak_rss_bytes
from model.network import S2SPlusNet
from s2s_sweep.configs import ConfigError
from s2s_sweep.images import to_uint8
from s2s_sweep.metrics import calculate_psnr, calculate_ssim, calculate_ssim_3d

# name -> (name shown in tables, settings that change its results)
BASELINES = {
    "cbm3d": ("CBM3D", {"profile": "np"}),
    "nlm": ("NL-means", {"h_over_sigma": 0.8, "patch_size": 5, "patch_distance": 6, "fast_mode": True}),
    "wavelet": ("wavelet", {"threshold": "BayesShrink", "mode": "soft", "rescale_sigma": True}),
}
METHODS = ("s2s+", *BASELINES)
LABELS = {"s2s+": "S2S+", **{name: label for name, (label, _) in BASELINES.items()}}
# Peak RAM of a baseline per pixel of an RGB image, over the worker's own footprint (~650 MB with
# torch imported): measured with peak_rss_bytes at 256² and 512² (CBM3D ~1000 B/px, NL-means ~120,
# wavelet ~80), with a margin.
BASELINE_BYTES_PER_PIXEL = {"cbm3d": 1200, "nlm": 160, "wavelet": 100}
BASELINE_BASE_BYTES = 700 * MB
UNUSED_SETTINGS = ("device", "log_every", "iqa_weights")  # where and how verbosely it runs: results do not change
OFF_BY_DEFAULT = {"ema_decay": 0.0}  # settings added after runs were recorded, at the value that reproduces them


@dataclass(frozen=True)
class Method:
    """A denoiser and the settings that change its results. S2S+ takes all of `config`; a baseline
    only its `quantize` (how the float output becomes 8-bit)."""

    name: str = "s2s+"
    config: S2SConfig = field(default_factory=S2SConfig)

    def __post_init__(self):
        if self.name not in METHODS:
            raise ConfigError(f"--method {self.name}: expected one of {', '.join(METHODS)}")

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def is_s2s(self) -> bool:
        return self.name == "s2s+"

    @property
    def settings(self) -> dict:
        """What the run's config.yaml holds and its hash covers."""
        if self.is_s2s:
            # a stabiliser at its paper value (off) is left out, so runs made before it existed keep their hash
            return {
                "method": self.name,
                **{
                    k: v for k, v in asdict(self.config).items() if not (k in OFF_BY_DEFAULT and v == OFF_BY_DEFAULT[k])
                },
            }
        return {"method": self.name, "quantize": self.config.quantize, **BASELINES[self.name][1]}

    @classmethod
    def from_settings(cls, settings: dict) -> "Method":
        """The inverse of `settings` (a config.yaml without `method` is an S2S+ run)."""
        values = dict(settings)
        name = values.pop("method", "s2s+")
        if name == "s2s+":
            return cls(name, S2SConfig(**values))
        return cls(name, S2SConfig(quantize=values.get("quantize", "round")))

    @property
    def hash(self) -> str:
        """Hash of the requested settings that change results (not device, logging or weights location)."""
        return settings_hash(self.settings)

    def row_hash(self, precision: str | None) -> str:
        """Hash of what made a row: for S2S+, with the precision it actually used instead of "auto"."""
        return settings_hash({**self.settings, "precision": precision}) if self.is_s2s and precision else self.hash

    def run_name(self, dataset: str, run_id: str) -> str:
        """What the MLflow UI's run list shows."""
        if self.is_s2s:
            config = self.config
            return f"{dataset} S2S+ p={config.p} steps={config.steps} lambda_iqa={config.lambda_iqa:g} {run_id}"
        return f"{dataset} {self.label} {run_id}"

    def row_values(self) -> dict:
        """The table's settings columns: S2S+'s hyperparameters are null for a baseline."""
        config = self.config if self.is_s2s else None
        values = {
            key: getattr(config, key) if config else None for key in ("p", "lambda_iqa", "passes", "seed", "ema_decay")
        }
        init = None if not config else config.init if config.init in ("cold", "warm") else "file"
        values |= {"steps": config.image_steps if config else None, "init": init}  # the steps this image trained
        return {
            **values,
            "method": self.name,
            "quantize": self.config.quantize,
            "settings": json.dumps(self.settings, sort_keys=True),
        }

    def check_installed(self) -> None:
        if self.name == "cbm3d" and importlib.util.find_spec("bm3d") is None:
            raise ConfigError(
                '--method cbm3d: the bm3d package is not installed; pip install "s2s-sweep[baselines]" (or pip install bm3d) on every node'
            )

    def plan(self, height: int, width: int, budget_bytes: int, device_type: str, name: str) -> Plan:
        """Memory of one image: S2S+'s plan (crops and tiles fitted to the budget); a baseline's whole-image estimate."""
        if self.is_s2s:
            return fit_memory(height, width, self.config, budget_bytes, device_type, name)
        peak = baseline_peak_bytes(self.name, height, width)
        if peak > budget_bytes:
            raise DoesNotFit(
                f"{name}: {height}x{width} pixels needs about {peak / MB:,.0f} MB for {self.label}, more than the {budget_bytes / MB:,.0f} MB budget"
            )
        return Plan(crop=0, batch=1, tile=0, train_bytes=0, infer_bytes=peak, host_bytes=peak)

    def fitted(self, plan: Plan) -> "Method":
        """S2S+ with the plan's training crops and inference tiles; a baseline as it is."""
        if not self.is_s2s:
            return self
        config = self.config
        return replace(
            self,
            config=config.replace(
                crop_size=plan.crop or config.crop_size,
                crop_batch=plan.batch if plan.crop else config.crop_batch,
                tile_size=plan.tile or config.tile_size,
            ),
        )


def settings_hash(settings: dict) -> str:
    keep = {k: v for k, v in settings.items() if k not in UNUSED_SETTINGS}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def baseline_peak_bytes(name: str, height: int, width: int) -> int:
    return BASELINE_BASE_BYTES + BASELINE_BYTES_PER_PIXEL[name] * height * width


def estimate_noise_sigma(noisy: np.ndarray) -> float:
    """Noise σ on the 0..255 scale, estimated from the image alone (mean over its channels)."""
    from skimage.restoration import estimate_sigma

    return 255.0 * float(np.mean(estimate_sigma(noisy, channel_axis=-1)))


def run_baseline(name: str, noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Denoised float image in [0, 1] of a (H, W, C) float image with noise σ (0..255 scale)."""
    from skimage.restoration import denoise_nl_means, denoise_wavelet

    settings, sigma = BASELINES[name][1], sigma / 255.0
    if name == "cbm3d":
        import bm3d

        denoised = (
            bm3d.bm3d_rgb(noisy, sigma, profile=settings["profile"])
            if noisy.shape[2] == 3
            else bm3d.bm3d(noisy[..., 0], sigma, profile=settings["profile"])[..., None]
        )
    elif name == "nlm":
        nlm = {k: v for k, v in settings.items() if k != "h_over_sigma"}
        denoised = denoise_nl_means(noisy, h=settings["h_over_sigma"] * sigma, sigma=sigma, channel_axis=-1, **nlm)
    else:
        denoised = denoise_wavelet(
            noisy,
            sigma=sigma,
            method=settings["threshold"],
            mode=settings["mode"],
            rescale_sigma=settings["rescale_sigma"],
            channel_axis=-1,
        )
    return np.clip(denoised, 0.0, 1.0).astype(np.float32)


def denoise_image(
    image_id: str,
    noisy: np.ndarray,
    clean: np.ndarray | None,
    method: Method,
    sigma: float | None,
    cpus: float,
    initial_state: dict | None = None,
) -> dict:
    """The work of one Ray task: denoise, score the input and the output. `sigma`: the dataset's
    true noise σ (0..255), None to estimate it (baselines only); `initial_state`: the seed network
    of a warm start (S2S+). Plain function, so it also runs without Ray."""
    torch.set_num_threads(max(1, int(cpus)))
    values, denoised = (
        s2s_image(noisy, method.config, initial_state) if method.is_s2s else baseline_image(noisy, method.name, sigma)
    )
    on_cuda = values["device"].startswith("cuda")
    denoised = to_uint8(denoised, method.config.quantize)  # the saved PNG, and what the metrics score
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
        # measured: GPU memory on CUDA; else the worker's peak RSS, a lifetime maximum (an upper bound once it ran larger images)
        "peak_memory_mb": (torch.cuda.max_memory_allocated() if on_cuda else peak_rss_bytes()) / MB,
        "node": ray.util.get_node_ip_address() if ray.is_initialized() else "local",
        "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local",
    }


def gpu_share_memory_mb(config: S2SConfig) -> int:
    """`memory_mb` for a task that holds a fraction of a GPU (--gpus-per-image 0.25): that fraction of
    the GPU's memory, so images packed on one GPU do not each plan for all that is free."""
    in_task = ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None  # not the driver
    share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0) if in_task else 0
    if config.memory_mb or not 0 < share < 1 or not torch.cuda.is_available():
        return config.memory_mb
    return int(share * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / MB)


def s2s_image(noisy: np.ndarray, config: S2SConfig, initial_state: dict | None = None) -> tuple[dict, np.ndarray]:
    """Train an S2S+ network on the image, fresh or from a seed (`image_steps` steps), and denoise it."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = denoise(
        noisy,
        config.replace(memory_mb=gpu_share_memory_mb(config), steps=config.image_steps),
        initial_state=initial_state,
    )
    on_cuda = torch.device(result.device).type == "cuda"
    values = {
        "train_seconds": result.train_seconds,
        "inference_seconds": result.inference_seconds,
        "device": result.device,
        "precision": config.precision_on("cuda" if on_cuda else "cpu"),
        "crop": result.plan.crop,
        "crop_batch": result.plan.batch,
        "tile": result.plan.tile,
        "memory_mb": result.plan.peak_bytes / MB,
    }
    return values, result.denoised


def baseline_image(noisy: np.ndarray, name: str, sigma: float | None) -> tuple[dict, np.ndarray]:
    """Run a baseline with the given σ, or the σ estimated from the image."""
    source = "dataset" if sigma is not None else "estimated"
    sigma = sigma if sigma is not None else estimate_noise_sigma(noisy)
    started = time.perf_counter()
    denoised = run_baseline(name, noisy, sigma)
    values = {
        "train_seconds": 0.0,
        "inference_seconds": time.perf_counter() - started,
        "device": "cpu",
        "noise_sigma": sigma,
        "sigma_source": source,
        "memory_mb": baseline_peak_bytes(name, *noisy.shape[:2]) / MB,
    }
    return values, denoised


def train_seed_task(images: list[np.ndarray], config: S2SConfig, cpus: float) -> tuple[bytes, float]:
    """The Ray task of a warm start's seed: a network trained `steps` on each image in turn, as
    the bytes of its state dict (the run saves them as seed.pt), and the seconds it took."""
    torch.set_num_threads(max(1, int(cpus)))
    started = time.perf_counter()
    state = train_seed(images, config.replace(memory_mb=gpu_share_memory_mb(config)))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), time.perf_counter() - started


def load_seed(data: bytes, name: str) -> dict:
    """A saved seed's state dict; a file that is not one is a one-line error naming it."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        S2SPlusNet(channels=state["encoder_in.0.conv.weight"].shape[1] // 2).load_state_dict(state)
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        KeyError,
        TypeError,
        AttributeError,
    ) as error:  # what a wrong file raises
        raise ConfigError(
            f"init: {name}: not a saved Self2Self+ seed network (a run's seed.pt): {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        ) from None
    return state
