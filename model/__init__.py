"""Self2Self+ for one image, in plain PyTorch: network, masking, losses, training and inference."""

from model.config import PAPER_DEFAULTS, S2SConfig
from model.denoiser import DenoiseResult, denoise

__all__ = ["PAPER_DEFAULTS", "DenoiseResult", "S2SConfig", "denoise"]
