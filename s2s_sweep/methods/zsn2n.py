"""Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023): a fast learned zero-shot peer of S2S+, as
its paper states it (network, down-sampler, losses, optimiser and iterations in model/zsn2n.py).
It runs where S2S+ runs (a GPU where the cluster has one, else the task's CPUs), on the whole
image, with the same rows, MLflow records and report; only `seed` (its initialisation), `seeding`
(run_settings.py), `quantize` and `memory_mb` are settable. model/zsn2n.py (and torch) load when
first used: a run's driver imports this module to plan and record, and never trains."""

from model.memory import MB, PROCESS_BYTES
from s2s_sweep.methods.base import SHARED_SETTABLE, DenoisingMethod, device_type


class ZeroShotNoise2Noise(DenoisingMethod):
    name = "zsn2n"
    label = "ZS-N2N"
    settable = (*SHARED_SETTABLE, "seed", "seeding")
    learned = True
    quoted_speed = (  # the paper's timings, as issue 24 summarises them (not re-checked against the paper offline)
        {"source": "Mansour & Heckel 2023", "device": "GPU", "seconds per image": "12–20 (256²)"},
        {"source": "Mansour & Heckel 2023", "device": "CPU", "seconds per image": "about 60 (256²)"},
    )
    # Peak memory of one image: the process, a workspace, and the activations of the whole image and
    # its two halves kept for the backward pass with their gradients. Measured on CPU (fp32, peak RSS
    # of a fresh process): 837, 1139, 2335 MB at 256², 512², 1024², i.e. ~1.6 KB per pixel over
    # ~840 MB (process + workspace); estimated with margins as 2 KB per pixel and 350 MB.
    bytes_per_pixel = 2000
    workspace_bytes = 350 * MB

    @property
    def fixed(self) -> dict:
        zsn2n = model_zsn2n()
        return {
            "iterations": zsn2n.ITERATIONS,
            "lr": zsn2n.LEARNING_RATE,
            "lr_halved_after": zsn2n.DECAY_AFTER,
            "hidden_channels": zsn2n.CHANNELS,
        }

    def peak_bytes(self, height: int, width: int, device_type: str = "cpu") -> int:
        return PROCESS_BYTES[device_type] + self.workspace_bytes + self.bytes_per_pixel * height * width

    def parameter_count(self, channels: int) -> int:
        return model_zsn2n().parameter_count(channels)

    def row_values(self, config, run):
        return {"seed": config.seed, "steps": model_zsn2n().ITERATIONS}

    def describe(self, config):
        return f"ZS-N2N seed={config.seed}"

    def denoise(self, noisy, config, sigma, initial_state):
        result = model_zsn2n().zsn2n_denoise(noisy, seed=config.seed, device=config.device)
        values = {
            "train_seconds": result.train_seconds,
            "inference_seconds": result.inference_seconds,
            "device": result.device,
            "precision": "fp32",
            "memory_mb": self.peak_bytes(*noisy.shape[:2], device_type(result.device)) / MB,
        }
        return values, result.denoised


def model_zsn2n():
    """model/zsn2n.py, imported on first use (it loads torch)."""
    from model import zsn2n

    return zsn2n
