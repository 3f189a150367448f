"""Self2Self+ for one image, in plain PyTorch: network, masking, losses, training and inference.

`denoise` and `DenoiseResult` load torch when first used (PEP 562), so importing the config alone
(a run's driver, which plans and records but never trains) stays light."""

from model.config import PAPER_DEFAULTS, S2SConfig

__all__ = ["PAPER_DEFAULTS", "DenoiseResult", "S2SConfig", "denoise"]


def __getattr__(name: str):
    if name in ("denoise", "DenoiseResult"):
        from model import denoiser

        return getattr(denoiser, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
