import numpy as np
import pytest
from skimage.metrics import structural_similarity

from s2s_sweep.metrics import calculate_heldout_psnr, calculate_psnr, calculate_ssim, calculate_ssim_3d

RNG = np.random.default_rng(0)
CLEAN = RNG.integers(0, 256, (48, 40, 3), dtype=np.uint8)


def test_psnr_of_a_known_error():
    other = CLEAN.astype(np.int16) + np.where(RNG.random(CLEAN.shape) < 0.5, 5, -5)
    other = np.clip(other, 0, 255).astype(np.uint8)
    mse = np.mean((other.astype(np.float64) - CLEAN) ** 2)
    assert calculate_psnr(other, CLEAN) == pytest.approx(10 * np.log10(255**2 / mse))


def test_float_results_are_rounded_to_8_bits_first():
    assert calculate_psnr(CLEAN / 255.0 + 0.4 / 255, CLEAN) == np.inf  # rounds back to CLEAN


def test_ssim_follows_wang_2004_with_a_gaussian_window():
    noisy = np.clip(CLEAN + RNG.normal(0, 20, CLEAN.shape), 0, 255).astype(np.uint8)
    expected = np.mean(
        [
            structural_similarity(
                noisy[..., c],
                CLEAN[..., c],
                data_range=255,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for c in range(3)
        ]
    )
    assert calculate_ssim(noisy, CLEAN) == pytest.approx(expected)
    assert calculate_ssim(CLEAN, CLEAN) == pytest.approx(1.0)


def test_grayscale_and_shape_mismatch():
    gray = CLEAN[..., :1]
    assert calculate_ssim(gray, gray) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_psnr(gray, CLEAN)


def test_heldout_psnr_scores_the_entries_some_pass_predicted():
    noisy = np.full((4, 4, 3), 0.5, dtype=np.float32)
    heldout = noisy + 0.1
    heldout[0, 0, 0] = np.nan  # never dropped: no held-out prediction, not scored
    assert calculate_heldout_psnr(heldout, noisy) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 on data range 1
    with pytest.raises(ValueError, match="no entry was dropped"):
        calculate_heldout_psnr(np.full_like(noisy, np.nan), noisy)
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_heldout_psnr(heldout[:2], noisy)


def matlab_ssim_3d(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB's ssim on an H x W x 3 array, written out as its source does it: an 11^3 Gaussian
    (sigma 1.5, radius ceil(3 sigma)) from ndgrid, normalised; imfilter 'replicate'; Eq. 13; mean."""
    radius = 5
    x, y, z = np.meshgrid(*[np.arange(-radius, radius + 1)] * 3, indexing="ij")
    kernel = np.exp(-(x * x + y * y + z * z) / (2 * 1.5**2))
    kernel /= kernel.sum()

    def filtered(values):
        padded = np.pad(values, radius, mode="edge")
        out = np.zeros_like(values)
        for i, j, k in np.ndindex(values.shape):
            out[i, j, k] = (padded[i : i + 11, j : j + 11, k : k + 11] * kernel).sum()
        return out

    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = filtered(a), filtered(b)
    var_a, var_b, cov = filtered(a * a) - mu_a**2, filtered(b * b) - mu_b**2, filtered(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float((((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))).mean())


def test_ssim_3d_is_matlabs_ssim_of_the_whole_array():
    small = CLEAN[:12, :10]
    noisy = np.clip(small.astype(np.int16) + RNG.integers(-30, 31, small.shape), 0, 255).astype(np.uint8)
    assert calculate_ssim_3d(noisy, small) == pytest.approx(matlab_ssim_3d(noisy, small), abs=1e-6)  # float32 maps
    assert calculate_ssim_3d(small, small) == pytest.approx(1.0)


def test_the_3d_window_scores_colour_noise_higher_than_the_per_channel_mean(astronaut_pair):
    noisy, clean = astronaut_pair  # σ 25 on a photograph: the two conventions differ as published figures do
    assert calculate_ssim_3d(noisy, clean) > calculate_ssim(noisy, clean) + 0.05
