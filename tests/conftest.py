import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.losses import PAQ2PIQ_FILE, RESNET18_FILE
from s2s_sweep.datasets import add_gaussian_noise

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def iqa_weights_dir(tmp_path_factory) -> str:
    """A TORCH_HOME-style folder with randomly initialised ResNet-18 and PaQ-2-PiQ weight files,
    in the exact places and formats pyiqa and torchvision read them from."""
    import torchvision
    from pyiqa.archs.paq2piq_arch import PAQ2PIQ

    root = tmp_path_factory.mktemp("torch_home")
    hub = root / "hub"
    (hub / RESNET18_FILE).parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), hub / RESNET18_FILE)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))  # PAQ2PIQ's constructor reads the ResNet-18 file from here
    try:
        paq2piq = PAQ2PIQ(pretrained=False)
    finally:
        torch.hub.set_dir(previous)
    (hub / PAQ2PIQ_FILE).parent.mkdir(parents=True)
    torch.save(paq2piq.state_dict(), hub / PAQ2PIQ_FILE)
    return str(root)


@pytest.fixture(scope="session")
def astronaut_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real photograph (scikit-image's astronaut, 96x96 crop of the face) with σ = 25 noise."""
    from skimage import data

    clean = data.astronaut()[30:126, 180:276].astype(np.float32) / 255.0
    return add_gaussian_noise(clean, 25.0, seed=1), clean


def run_module(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m ...` from the repository root and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
