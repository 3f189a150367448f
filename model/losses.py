"""The Self2Self+ losses: L1 on the dropped entries (paper Eq. 4) and the PaQ-2-PiQ IQA loss (Eq. 6)."""

import contextlib
import functools
import os
from pathlib import Path

import torch

from model.errors import UserError

RESNET18_FILE = "checkpoints/resnet18-f37072fd.pth"  # torchvision's ImageNet weights, read by PaQ-2-PiQ
PAQ2PIQ_FILE = "pyiqa/P2P_RoIPoolModel-fit.10.bs.120-ca69882e.pth"


class IQAWeightsMissing(UserError, RuntimeError):
    """The PaQ-2-PiQ weights are not on disk and could not be downloaded."""


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


def hub_dir(weights_dir: str | None) -> Path:
    """The torch hub folder: `weights_dir`/hub when given (a TORCH_HOME-style folder), else torch's own."""
    return Path(weights_dir) / "hub" if weights_dir else Path(torch.hub.get_dir())


def ensure_iqa_weights(weights_dir: str | None) -> None:
    """Make sure both weight files are on disk, downloading them once where the network allows."""
    from pyiqa.archs.paq2piq_arch import default_model_urls
    from torchvision.models import ResNet18_Weights

    hub = hub_dir(weights_dir)
    missing = []
    for relative, url in [
        (RESNET18_FILE, ResNet18_Weights.IMAGENET1K_V1.url),
        (PAQ2PIQ_FILE, default_model_urls["url"]),
    ]:
        path = hub / relative
        if path.is_file():
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except Exception as error:
            missing.append(f"{path} (from {url}: {type(error).__name__})")
    if missing:
        raise IQAWeightsMissing(
            f"IQA weights missing and not downloadable: {'; '.join(missing)}. Copy the files there, "
            f"or pass --iqa-weights DIR (a TORCH_HOME-style folder with hub/{RESNET18_FILE} and hub/{PAQ2PIQ_FILE}), "
            f"or use --lambda-iqa 0 to train without the IQA loss"
        )


@contextlib.contextmanager
def _torch_hub_dir(path: Path):
    """torchvision reads ImageNet weights from torch.hub.get_dir(); point it at `path` meanwhile."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(path))
    try:
        yield
    finally:
        torch.hub.set_dir(previous)


@functools.cache
def load_iqa_model(weights_dir: str | None, device: str) -> torch.nn.Module:
    """PaQ-2-PiQ from pyiqa as a differentiable loss, loaded once per process and device."""
    import pyiqa

    ensure_iqa_weights(weights_dir)
    hub = hub_dir(weights_dir)
    with _torch_hub_dir(hub), open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        model = pyiqa.create_metric(
            "paq2piq", as_loss=True, device=torch.device(device), pretrained_model_path=str(hub / PAQ2PIQ_FILE)
        )
    model.requires_grad_(False)  # gradients flow to the denoiser's output only
    return model


def write_random_iqa_weights(root: Path) -> None:
    """A TORCH_HOME-style folder `root` with randomly initialised ResNet-18 and PaQ-2-PiQ weight files,
    in the exact places and formats pyiqa and torchvision read them from: for tests and timing
    offline (they cost what the real ones cost), never for training that is meant to denoise."""
    import torchvision
    from pyiqa.archs.paq2piq_arch import PAQ2PIQ

    hub = Path(root) / "hub"
    (hub / RESNET18_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), hub / RESNET18_FILE)
    with _torch_hub_dir(hub):  # PAQ2PIQ's constructor reads the ResNet-18 file from here
        paq2piq = PAQ2PIQ(pretrained=False)
    (hub / PAQ2PIQ_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(paq2piq.state_dict(), hub / PAQ2PIQ_FILE)
