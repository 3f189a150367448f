"""Where the PaQ-2-PiQ weights of the IQA loss (model/losses.py) live, and how they get there.

The driver of a run checks the weights before any task starts, and with --iqa-weights that check
loads nothing heavy; torch comes in to find its own hub folder (no --iqa-weights), and torchvision
and pyiqa only where a file is missing (their download addresses) or written."""

import contextlib
from pathlib import Path

from model.errors import UserError

RESNET18_FILE = "checkpoints/resnet18-f37072fd.pth"  # torchvision's ImageNet weights, read by PaQ-2-PiQ
PAQ2PIQ_FILE = "pyiqa/P2P_RoIPoolModel-fit.10.bs.120-ca69882e.pth"


class IQAWeightsMissing(UserError, RuntimeError):
    """The PaQ-2-PiQ weights are not on disk and could not be downloaded."""


def hub_dir(weights_dir: str | None) -> Path:
    """The torch hub folder: `weights_dir`/hub when given (a TORCH_HOME-style folder), else torch's own."""
    if weights_dir:
        return Path(weights_dir) / "hub"
    import torch

    return Path(torch.hub.get_dir())


def ensure_iqa_weights(weights_dir: str | None) -> None:
    """Make sure both weight files are on disk, downloading them once where the network allows."""
    hub = hub_dir(weights_dir)
    if all((hub / relative).is_file() for relative in (RESNET18_FILE, PAQ2PIQ_FILE)):
        return
    import torch
    from pyiqa.archs.paq2piq_arch import default_model_urls
    from torchvision.models import ResNet18_Weights

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
def torch_hub_dir(path: Path):
    """torchvision reads ImageNet weights from torch.hub.get_dir(); point it at `path` meanwhile."""
    import torch

    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(path))
    try:
        yield
    finally:
        torch.hub.set_dir(previous)


def write_random_iqa_weights(root: Path) -> None:
    """A TORCH_HOME-style folder `root` with randomly initialised ResNet-18 and PaQ-2-PiQ weight files,
    in the exact places and formats pyiqa and torchvision read them from: for tests and timing
    offline (they cost what the real ones cost), never for training that is meant to denoise."""
    import torch
    import torchvision
    from pyiqa.archs.paq2piq_arch import PAQ2PIQ

    hub = Path(root) / "hub"
    (hub / RESNET18_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), hub / RESNET18_FILE)
    with torch_hub_dir(hub):  # PAQ2PIQ's constructor reads the ResNet-18 file from here
        paq2piq = PAQ2PIQ(pretrained=False)
    (hub / PAQ2PIQ_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(paq2piq.state_dict(), hub / PAQ2PIQ_FILE)
