"""The Self2Self+ denoising autoencoder.

Ko & Lee, "Self2Self+: Single-Image Denoising with Self-Supervised Learning and Image
Quality Assessment Loss" (arXiv:2307.10695), Fig. 1 and "Neural Network Architecture";
layer for layer as in the authors' public code, so published hyperparameters transfer.

Input: the Bernoulli mask and the masked image, concatenated on channels (mask first).
Encoder: gated convolutions, 48 channels, down to H/32. Decoder: nearest upsampling,
skip concatenation, two plain convolutions with dropout before each, 96 channels.
Dropout stays active at inference too: averaging many dropout nets is the denoiser.

Every random draw (input mask and dropout) comes from a torch.Generator per batch
element, so a batch of B inference passes equals B sequential passes with the same
generators: the result does not depend on how passes are batched.
"""

import torch
import torch.nn.functional as F
from torch import nn

from model.masking import keep_mask
from model.sizes import LEVELS, check_image_size, padded_size

ENCODER_WIDTH = 48
DECODER_WIDTH = 96


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, reflect padding 1 (the paper's convolution)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect")


class GatedConv2d(nn.Module):
    """LeakyReLU(0.2)(conv_f(x)) * sigmoid(conv_g(x)) (Yu et al. 2019, free-form inpainting).

    The feature and gate convolutions are stored as one convolution with twice the
    output channels: same parameters and math, one kernel launch instead of two.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = conv3x3(in_channels, 2 * out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature, gate = self.conv(x).chunk(2, dim=1)
        return F.leaky_relu(feature, 0.2) * torch.sigmoid(gate)


class S2SPlusNet(nn.Module):
    """Self2Self+ network for C-channel images (C = 3 for RGB, 1 for grayscale)."""

    def __init__(self, channels: int = 3, p: float = 0.4):
        super().__init__()
        if not 0.0 < p < 1.0:
            raise ValueError(f"p: expected a dropout probability in (0, 1), got {p}")
        self.p = p
        e, d = ENCODER_WIDTH, DECODER_WIDTH
        # encoder: block 0 at full resolution, then five blocks of max-pool + gated conv
        self.encoder_in = nn.Sequential(GatedConv2d(2 * channels, e), GatedConv2d(e, e))
        self.encoder_down = nn.ModuleList(GatedConv2d(e, e) for _ in range(LEVELS))
        # decoder: the first block sees 48 upsampled + 48 skip channels, the others 96 + 48
        self.decoder = nn.ModuleList(
            nn.ModuleList([conv3x3((e if level == 0 else d) + e, d), conv3x3(d, d)]) for level in range(LEVELS)
        )
        self.head = conv3x3(d, channels)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """The authors' init: conv weights ~ N(0, 0.02), biases 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
                nn.init.zeros_(module.bias)

    def forward(self, noisy: torch.Tensor, mask: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """noisy, mask: (B, C, H, W) with H, W multiples of 32; one generator per batch element."""
        x = torch.cat([mask, mask * noisy], dim=1)  # (B, 2C, H, W)
        skips = [self.encoder_in(x)]  # (B, 48, H, W)
        for gated_conv in self.encoder_down:
            skips.append(gated_conv(F.max_pool2d(skips[-1], 2)))  # (B, 48, H/2^k, W/2^k)
        h = skips.pop()  # (B, 48, H/32, W/32)
        for first, second in self.decoder:
            h = torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skips.pop()], dim=1)
            h = F.leaky_relu(first(self.dropout(h, generators)), 0.2)  # (B, 96, ...)
            h = F.leaky_relu(second(self.dropout(h, generators)), 0.2)
        return self.head(h)  # (B, C, H, W), no activation

    def dropout(self, h: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """Inverted dropout with probability p, drawn per batch element from its generator.

        Entries are drawn in (H, W, C) order whatever the memory format, so
        channels_last and contiguous layouts see the same random numbers.
        """
        _, channels, height, width = h.shape
        keep = keep_mask((height, width, channels), self.p, generators, h.device)
        scale = keep.to(h.dtype).mul_(1.0 / (1.0 - self.p))  # 0 or 1/(1-p)
        return h * scale.permute(0, 3, 1, 2)  # (B, C, H, W) view of (B, H, W, C)


def pad_to_network(image: torch.Tensor) -> torch.Tensor:
    """Reflect-pad (B, C, H, W) at the bottom and right to a network-compatible size."""
    height, width = image.shape[-2:]
    check_image_size(height, width)
    padded_h, padded_w = padded_size(height, width)
    return F.pad(image, (0, padded_w - width, 0, padded_h - height), mode="reflect")
