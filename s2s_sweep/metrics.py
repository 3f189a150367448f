"""PSNR and SSIM of 8-bit images, as Self2Self-line results are reported.

Protocol: both images are 8-bit (a float image is rounded to uint8 first; to score truncated
output as the authors' code saves it, pass `to_uint8(result, "floor")`), data range 255,
computed on all channels of the full image (no border crop, no conversion to Y). SSIM is
Wang et al. 2004: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population
covariance, mean over channels. Both come from
scikit-image (`peak_signal_noise_ratio`, `structural_similarity`) with those settings.
"""

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from s2s_sweep.images import to_uint8


def as_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 passes through; a float image in [0, 1] is rounded to uint8."""
    return image if image.dtype == np.uint8 else to_uint8(image)


def calculate_psnr(img: np.ndarray, img2: np.ndarray) -> float:
    """PSNR in dB of two (H, W, C) images under the protocol above."""
    img, img2 = as_uint8(img), as_uint8(img2)
    if img.shape != img2.shape:
        raise ValueError(f"PSNR: image shapes differ, {img.shape} vs {img2.shape}")
    with np.errstate(divide="ignore"):  # identical images: inf dB
        return float(peak_signal_noise_ratio(img2, img, data_range=255))


def calculate_ssim(img: np.ndarray, img2: np.ndarray) -> float:
    """SSIM of two (H, W, C) images under the protocol above (Gaussian sigma 1.5, mean over channels)."""
    img, img2 = as_uint8(img), as_uint8(img2)
    if img.shape != img2.shape:
        raise ValueError(f"SSIM: image shapes differ, {img.shape} vs {img2.shape}")
    return float(
        structural_similarity(
            img,
            img2,
            data_range=255,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def calculate_heldout_psnr(heldout: np.ndarray, noisy: np.ndarray) -> float:
    """A no-reference score in dB: PSNR (data range 1, float, no rounding) of the held-out
    estimate (model.denoiser.Estimate: per entry, the mean of the passes whose input dropped
    it) against the noisy image, over the entries some pass dropped.

    In the spirit of Noise2Self's self-supervised loss: were each prediction independent of its
    entry's noise, E|prediction - noisy|^2 = E|prediction - clean|^2 + σ², so the score would rank
    estimates as PSNR against the clean image does. It is not strictly so here: the weights were
    trained on those very noisy values and may memorise them late in training; bench_landscape
    measures how well it ranks (Spearman against PSNR)."""
    if heldout.shape != noisy.shape:
        raise ValueError(f"held-out PSNR: image shapes differ, {heldout.shape} vs {noisy.shape}")
    predicted = np.isfinite(heldout)
    if not predicted.any():
        raise ValueError("held-out PSNR: no entry was dropped by any pass; use more passes")
    error = np.mean((heldout[predicted].astype(np.float64) - noisy[predicted]) ** 2)
    return float(10 * np.log10(1.0 / error))
