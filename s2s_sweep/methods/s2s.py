"""Self2Self+ (Ko & Lee, 2023; the paper in ../shared/paper): the method this project runs and
searches. Its network and one-image training are model/ (network.py, denoiser.py); here is how
the runner plans, records and labels it, the seed network of a warm start, and its GPU share.

Torch and the training code (model/denoiser.py, model/network.py) are imported inside the functions
that need them, which run in the tasks: a run's driver imports this module to plan and record, and
needs neither (it saves torch's ~3 s import and its memory)."""

import io
import pickle
import time

import numpy as np
import ray

from model.config import S2SConfig
from model.memory import MB, Plan, fit_memory
from s2s_sweep.configs import ConfigError
from s2s_sweep.methods.base import DenoisingMethod, device_type, recorded_settings
from s2s_sweep.run_settings import RUN_SETTINGS, RunSettings, join

ROW_COLUMNS = ("p", "lambda_iqa", "passes", "seed", "ema_decay", "lr_decay")  # the rows' columns of its hyperparameters


class SelfToSelfPlus(DenoisingMethod):
    name = "s2s+"
    label = "S2S+"
    learned = True
    published = {  # the paper's Table 2 (CBSD68, its 68 images) and Table 3 (SIDD validation, PolyU)
        "cbsd68-15": (29.97, 0.9307),
        "cbsd68-25": (28.71, 0.9076),
        "cbsd68-50": (26.51, 0.8557),
        "sidd": (34.11, 0.8903),
        "polyu": (37.33, 0.9815),
    }

    def settings(self, config: S2SConfig, run: RunSettings) -> dict:
        return {"method": self.name, **recorded_settings(join(config, run))}

    def config_from(self, values: dict) -> dict:
        return dict(values)

    @property
    def settable(self) -> tuple[str, ...]:
        return (*S2SConfig.__dataclass_fields__, *RUN_SETTINGS)

    def describe(self, config: S2SConfig) -> str:
        return f"S2S+ p={config.p} steps={config.steps} passes={config.passes} λ={config.lambda_iqa:g}"

    def row_values(self, config: S2SConfig, run: RunSettings) -> dict:
        init = run.init if run.init in ("cold", "warm") else "file"
        return {
            **{key: getattr(config, key) for key in ROW_COLUMNS},
            "steps": run.image_steps(config.steps),  # the steps this image trained
            "init": init,
        }

    def parameter_count(self, channels: int) -> int:
        from model.network import S2SPlusNet

        return sum(parameter.numel() for parameter in S2SPlusNet(channels).parameters())

    def plan(self, config, height, width, budget_bytes, device_type, name) -> Plan:
        """Crops and tiles fitted to the budget (model/memory.py)."""
        return fit_memory(height, width, config, budget_bytes, device_type, name)

    def fitted(self, config: S2SConfig, plan: Plan) -> S2SConfig:
        return config.replace(
            crop_size=plan.crop or config.crop_size,
            crop_batch=plan.batch if plan.crop else config.crop_batch,
            tile_size=plan.tile or config.tile_size,
        )

    def denoise(self, noisy, config, sigma, initial_state):
        """Train a network on the image, fresh or from a seed, and denoise it."""
        from model.denoiser import denoise

        result = denoise(noisy, config.replace(memory_mb=gpu_share_memory_mb(config)), initial_state=initial_state)
        values = {
            "train_seconds": result.train_seconds,
            "inference_seconds": result.inference_seconds,
            "device": result.device,
            "precision": config.precision_on(device_type(result.device)),
            "crop": result.plan.crop,
            "crop_batch": result.plan.batch,
            "tile": result.plan.tile,
            "memory_mb": result.plan.peak_bytes / MB,
        }
        return values, result.denoised

    def protocol_notes(self, ok_rows, settings, paper):
        notes = []
        for key, name in (("steps", "steps"), ("passes", "passes"), ("lambda_iqa", "λ_IQA"), ("p", "p")):
            if key in paper and settings.get(key) != paper[key]:
                notes.append(f"{name} {settings.get(key):g} (paper {paper[key]:g})")
        if (ok_rows["crop"].fillna(0) > 0).any():
            notes.append(f"{int((ok_rows['crop'] > 0).sum())} of {len(ok_rows)} images trained on crops")
        if (ok_rows["precision"] == "bf16").any():
            notes.append("bf16 arithmetic")
        if settings.get("ema_decay"):  # the stabilisers (docs/variance.md): off in the paper
            notes.append(f"read out from a moving average of the weights (decay {settings['ema_decay']:g})")
        if settings.get("lr_decay"):
            notes.append(f"learning rate decayed over the last {settings['lr_decay']:.0%} of the steps")
        if settings.get("init", "cold") != "cold" and len(ok_rows):  # rows record each image's steps and start
            notes.append(
                f"warm starts from {ok_rows['init_source'].iloc[0]}, {int(ok_rows['steps'].iloc[0])} steps per image; "
                "the paper trains each image from scratch"
            )
        if settings.get("quantize") == "round":
            notes.append("output rounded to 8 bits (the authors' code truncates)")
        return notes


def gpu_share_memory_mb(config: S2SConfig) -> int:
    """`memory_mb` for a task that holds a fraction of a GPU (--gpus-per-image 0.25): that fraction of
    the GPU's memory, so images packed on one GPU do not each plan for all that is free."""
    import torch

    in_task = ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None  # not the driver
    share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0) if in_task else 0
    if config.memory_mb or not 0 < share < 1 or not torch.cuda.is_available():
        return config.memory_mb
    return int(share * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / MB)


def train_seed_task(images: list[np.ndarray], config: S2SConfig, cpus: float) -> tuple[bytes, float]:
    """The Ray task of a warm start's seed: a network trained `steps` on each image in turn, as
    the bytes of its state dict (the run saves them as seed.pt), and the seconds it took."""
    import torch

    from model.denoiser import train_seed

    torch.set_num_threads(max(1, int(cpus)))
    started = time.perf_counter()
    state = train_seed(images, config.replace(memory_mb=gpu_share_memory_mb(config)))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), time.perf_counter() - started


def load_seed(data: bytes, name: str) -> dict:
    """A saved seed's state dict; a file that is not one is a one-line error naming it."""
    import torch

    from model.network import S2SPlusNet

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        S2SPlusNet(channels=state["encoder_in.0.conv.weight"].shape[1] // 2).load_state_dict(state)
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(  # what a wrong file raises
            f"init: {name}: not a saved Self2Self+ seed network (a run's seed.pt): {type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}"
        ) from None
    return state
