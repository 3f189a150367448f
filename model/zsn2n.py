"""Zero-Shot Noise2Noise on one image (plain PyTorch, no Ray): a fast learned zero-shot peer of S2S+.

    result = zsn2n_denoise(noisy, seed=0, device="auto")   # noisy: (H, W, C) float32 in [0, 1]

Y. Mansour and R. Heckel, "Zero-Shot Noise2Noise: Efficient Image Denoising without any Data",
CVPR 2023 (arXiv:2303.11253), as the paper states it:

- down-sampler: two fixed stride-2 filters per channel, [[0, ½], [½, 0]] and [[½, 0], [0, ½]]; each
  averages one diagonal of every 2 x 2 block, so the two half-resolution images share their signal
  and have independent noise (Noise2Noise on one image);
- network: a 3 x 3 convolution to 48 channels, LeakyReLU(0.2), a 3 x 3 convolution 48 -> 48,
  LeakyReLU(0.2), a 1 x 1 convolution back to the image's channels (22,275 parameters for RGB); it
  predicts the noise, the denoised image is y - f(y) (residual learning);
- loss, with g(x) = x - f(x) and mean squared errors: the residual loss
  ½ (‖D1(y) - g(D2(y))‖² + ‖D2(y) - g(D1(y))‖²) plus the consistency loss
  ½ (‖g(D1(y)) - D1(g(y))‖² + ‖g(D2(y)) - D2(g(y))‖²);
- optimiser: Adam, learning rate 0.001, 2000 iterations on the whole image, the rate halved after
  1500 (the authors' published notebook: max_epoch 2000, step_size 1500, gamma 0.5);
- inference: one pass, clip(y - f(y), 0, 1).

No pretrained weights, no data but the image. The only randomness is the initialisation (torch's
default for convolutions), drawn from `seed`.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.denoiser import resolve_device
from model.sizes import ImageTooSmall

CHANNELS = 48
ITERATIONS = 2000
LEARNING_RATE = 1e-3
DECAY_AFTER = 1500  # iterations, then the rate halves (StepLR step_size 1500, gamma 0.5)
DECAY_FACTOR = 0.5
MIN_SIDE = 2  # the down-sampler needs one 2 x 2 block


class ZSN2NNet(torch.nn.Module):
    """The paper's two-hidden-layer network; its output is the predicted noise."""

    def __init__(self, channels: int = 3, hidden: int = CHANNELS):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(hidden, hidden, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(x), 0.2)
        x = F.leaky_relu(self.conv2(x), 0.2)
        return self.conv3(x)


def pair_downsample(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two half-resolution images of (N, C, H, W) (odd last rows/columns are dropped)."""
    channels = image.shape[1]
    first = torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=image.dtype, device=image.device)
    one, two = (
        F.conv2d(image, kernel.expand(channels, 1, 2, 2), stride=2, groups=channels)
        for kernel in (first, first.flip(1))
    )
    return one, two


def zsn2n_loss(net: ZSN2NNet, noisy: torch.Tensor) -> torch.Tensor:
    """Residual + consistency loss of the paper on one image (N = 1)."""
    one, two = pair_downsample(noisy)
    denoised_one, denoised_two = one - net(one), two - net(two)
    residual = 0.5 * (F.mse_loss(one, denoised_two) + F.mse_loss(two, denoised_one))
    down_one, down_two = pair_downsample(noisy - net(noisy))
    consistency = 0.5 * (F.mse_loss(denoised_one, down_one) + F.mse_loss(denoised_two, down_two))
    return residual + consistency


def parameter_count(channels: int = 3) -> int:
    return sum(parameter.numel() for parameter in ZSN2NNet(channels).parameters())


@dataclass
class ZSN2NResult:
    denoised: np.ndarray  # (H, W, C) float32 in [0, 1]
    train_seconds: float
    inference_seconds: float
    device: str
    final_loss: float


def zsn2n_denoise(noisy: np.ndarray, seed: int = 0, device: str = "auto", iterations: int = ITERATIONS) -> ZSN2NResult:
    """Train the paper's network on `noisy` alone and denoise it."""
    height, width, channels = noisy.shape
    if min(height, width) < MIN_SIDE:
        raise ImageTooSmall(f"image: {height}x{width} pixels; ZS-N2N needs each side >= {MIN_SIDE}")
    where = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ZSN2NNet(channels).to(where)
    image = torch.from_numpy(np.array(noisy, dtype=np.float32).transpose(2, 0, 1)[None].copy()).to(where)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=DECAY_AFTER, gamma=DECAY_FACTOR)
    started = time.perf_counter()
    for _ in range(iterations):
        loss = zsn2n_loss(net, image)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    final_loss = float(loss.detach())  # one device sync, after training
    trained = time.perf_counter()
    with torch.no_grad():
        denoised = torch.clamp(image - net(image), 0.0, 1.0)[0].permute(1, 2, 0).cpu().numpy()
    return ZSN2NResult(denoised, trained - started, time.perf_counter() - trained, str(where), final_loss)
