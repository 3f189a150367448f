"""PSNR and SSIM of 8-bit images, as Self2Self-line results are reported.

Protocol: both images are 8-bit (a float image is rounded to uint8 first; to score truncated
output as the authors' code saves it, pass `to_uint8(result, "floor")`), data range 255,
computed on all channels of the full image (no border crop, no conversion to Y). SSIM is
Wang et al. 2004: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population
covariance, mean over channels. Both come from
scikit-image (`peak_signal_noise_ratio`, `structural_similarity`) with those settings.

Two SSIM conventions for colour images are in use, and published figures rarely say which:
- `ssim` (this project's, and most Python code's): SSIM of each channel with a 2-D window, then
  the mean over channels; scikit-image leaves out the 5-pixel border where the window is cut.
- `ssim_3d` (MATLAB's `ssim` on an H x W x 3 array, as the Self2Self author reported colour SSIM
  and as SIDD's common evaluation script scores each block): one SSIM map with a 3-D Gaussian
  window (sigma 1.5, radius ceil(3 sigma) = 5: 11 x 11 x 11 taps, also across the channels) over the
  whole array, replicate padding, the mean over every entry. It scores the same denoised image higher (mixing channels
  averages out colour noise). Data range 255, K1 = 0.01, K2 = 0.03 as above.
"""

import numpy as np

from s2s_sweep.images import to_uint8


def as_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 passes through; a float image in [0, 1] is rounded to uint8."""
    return image if image.dtype == np.uint8 else to_uint8(image)


def calculate_psnr(img: np.ndarray, img2: np.ndarray) -> float:
    """PSNR in dB of two (H, W, C) images under the protocol above."""
    img, img2 = as_uint8(img), as_uint8(img2)
    if img.shape != img2.shape:
        raise ValueError(f"PSNR: image shapes differ, {img.shape} vs {img2.shape}")
    from skimage.metrics import peak_signal_noise_ratio  # here, not at the top: it loads scipy.stats, a second

    with np.errstate(divide="ignore"):  # identical images: inf dB
        return float(peak_signal_noise_ratio(img2, img, data_range=255))


def calculate_ssim(img: np.ndarray, img2: np.ndarray) -> float:
    """SSIM of two (H, W, C) images under the protocol above (Gaussian sigma 1.5, mean over channels)."""
    img, img2 = as_uint8(img), as_uint8(img2)
    if img.shape != img2.shape:
        raise ValueError(f"SSIM: image shapes differ, {img.shape} vs {img2.shape}")
    from skimage.metrics import structural_similarity  # as in calculate_psnr

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


def calculate_ssim_3d(img: np.ndarray, img2: np.ndarray) -> float:
    """SSIM of two (H, W, C) images as MATLAB's `ssim` computes it on the whole array (the module
    docstring: 3-D Gaussian window, sigma 1.5, 11 taps a side, replicate padding, mean of the map)."""
    img, img2 = as_uint8(img), as_uint8(img2)
    if img.shape != img2.shape:
        raise ValueError(f"SSIM (3-D window): image shapes differ, {img.shape} vs {img2.shape}")
    x, y = (
        img.astype(np.float32),
        img2.astype(np.float32),
    )  # float32: half the memory of a large photo's maps, ~1e-6 off

    from scipy.ndimage import gaussian_filter

    def window_mean(values: np.ndarray) -> np.ndarray:
        # MATLAB's ssim: a normalised separable Gaussian of radius ceil(3 * 1.5) = 5, imfilter(..., 'replicate')
        return gaussian_filter(values, sigma=1.5, truncate=10 / 3, mode="nearest")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = window_mean(x), window_mean(y)
    var_x, var_y = window_mean(x * x) - mu_x**2, window_mean(y * y) - mu_y**2
    covariance = window_mean(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean(dtype=np.float64))


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
