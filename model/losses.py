"""The Self2Self+ losses: L1 on the dropped entries (paper Eq. 4) and the PaQ-2-PiQ IQA loss (Eq. 6)."""

import contextlib
import functools
import os

import torch

from model.iqa_weights import PAQ2PIQ_FILE, ensure_iqa_weights, hub_dir, torch_hub_dir


def masked_l1_loss(output: torch.Tensor, noisy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the dropped entries only (mask == 0): the authors' normalisation
    of the paper's sum-of-absolute-errors, sum |out - noisy| (1 - mask) / sum (1 - mask)."""
    dropped = 1.0 - mask
    return ((output - noisy).abs() * dropped).sum() / dropped.sum()


def iqa_loss(iqa_model: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
    """(100 - PaQ-2-PiQ(output))^2 on the unclamped output; grayscale is repeated to RGB."""
    if output.shape[1] == 1:
        output = output.expand(-1, 3, -1, -1)
    return (100.0 - iqa_model(output.float())).pow(2).mean()


@functools.cache
def load_iqa_model(weights_dir: str | None, device: str) -> torch.nn.Module:
    """PaQ-2-PiQ from pyiqa as a differentiable loss, loaded once per process and device."""
    import pyiqa

    ensure_iqa_weights(weights_dir)
    hub = hub_dir(weights_dir)
    with torch_hub_dir(hub), open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        model = pyiqa.create_metric(
            "paq2piq", as_loss=True, device=torch.device(device), pretrained_model_path=str(hub / PAQ2PIQ_FILE)
        )
    model.requires_grad_(False)  # gradients flow to the denoiser's output only
    return model
