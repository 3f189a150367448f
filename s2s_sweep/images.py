"""Reading and writing images as float arrays (H, W, C) in [0, 1].

Read: PNG, JPEG, TIFF (and anything else OpenCV decodes), 8- or 16-bit, grayscale (C = 1)
or RGB (C = 3). OpenCV is used rather than Pillow because Pillow silently reduces 16-bit
colour PNGs to 8 bits. A fully opaque alpha channel is dropped; a real one is an error,
since there is no single right background to composite on.
Write: 8-bit PNG, values rounded (not truncated) to 0..255.
"""

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from model.errors import UserError

cv2.utils.logging.setLogLevel(
    cv2.utils.logging.LOG_LEVEL_SILENT
)  # our errors name the file; OpenCV's own lines only add noise
Image.MAX_IMAGE_PIXELS = None  # Pillow only reads headers here; memory is planned by model/memory.py

READABLE_DEPTHS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class ImageError(UserError, ValueError):
    """An image file that cannot be used, with a message naming the file."""


def read_image(path: str | Path) -> np.ndarray:
    """Image file -> float32 array (H, W, C) in [0, 1], C = 1 (grayscale) or 3 (RGB)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ImageError(f"{path}: cannot decode the image (corrupt or not an image file)")
    if raw.dtype not in READABLE_DEPTHS:
        raise ImageError(f"{path}: {raw.dtype} samples are not supported; expected 8- or 16-bit integers")
    scale = READABLE_DEPTHS[raw.dtype]
    if raw.ndim == 2:
        raw = raw[..., None]
    channels = raw.shape[2]
    if channels in (2, 4):
        if not (raw[..., -1] == scale).all():
            raise ImageError(f"{path}: has a transparent alpha channel; save it without alpha (RGB or grayscale)")
        raw = raw[..., :-1]
    if raw.shape[2] == 3:
        raw = raw[..., ::-1]  # OpenCV decodes to BGR
    elif raw.shape[2] != 1:
        raise ImageError(f"{path}: {channels} channels; expected grayscale or RGB")
    return (raw.astype(np.float32) / scale).copy()


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) read from the file header without decoding the pixels; (0, 0) when unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0, 0
    return height, width


def to_uint8(image: np.ndarray, quantize: str = "round") -> np.ndarray:
    """[0, 1] float image -> uint8, rounded to nearest, or floored (`(x * 255).astype(uint8)`
    after clipping, as the Self2Self+ authors' code saves its results)."""
    scaled = np.clip(image * 255.0, 0, 255)
    return (np.round(scaled) if quantize == "round" else np.floor(scaled)).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 image (H, W, C) -> the bytes of an 8-bit PNG file."""
    pixels = pixels[..., 0] if pixels.shape[2] == 1 else pixels[..., ::-1]  # OpenCV writes BGR
    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise ImageError(f"cannot encode a {pixels.dtype} {pixels.shape} array as PNG")
    return data.tobytes()


def write_png(path: str | Path, image: np.ndarray, quantize: str = "round") -> None:
    """Write a [0, 1] float image (H, W, C) as an 8-bit PNG, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(to_uint8(image, quantize)))
