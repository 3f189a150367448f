"""The image sizes the Self2Self+ network accepts (model/network.py), without torch: the runner's
driver checks an image and model/memory.py plans a budget before any network exists."""

import math

from model.errors import ImageUnusable

LEVELS = 5  # the network's five 2x poolings: H and W must be multiples of 32
SIDE_MULTIPLE = 2**LEVELS
# The deepest feature map (H/32) must be at least 2 pixels for its reflect padding.
MIN_PADDED_SIDE = 2 * SIDE_MULTIPLE


def padded_size(height: int, width: int) -> tuple[int, int]:
    """Smallest network-compatible size (multiples of 32, at least 64) holding the image."""
    return tuple(max(MIN_PADDED_SIDE, math.ceil(s / SIDE_MULTIPLE) * SIDE_MULTIPLE) for s in (height, width))


class ImageTooSmall(ImageUnusable, ValueError):
    """An image with a side too short for the network's 32x downsampling."""


def check_image_size(height: int, width: int, name: str = "image") -> None:
    """Reflect padding can only mirror less than a full side, which sets the smallest image."""
    padded_h, padded_w = padded_size(height, width)
    if padded_h - height >= height or padded_w - width >= width:
        min_side = MIN_PADDED_SIDE // 2 + 1
        raise ImageTooSmall(
            f"{name}: {height}x{width} pixels is too small; Self2Self+ needs each side "
            f">= {min_side} pixels (the network downsamples 32x and reflect-pads to a multiple of 32)"
        )
