"""SSIM against the clean image (metrics.calculate_ssim: per channel, Wang et al. 2004)."""

from s2s_sweep.metrics import calculate_ssim
from s2s_sweep.objectives.base import Objective

SSIM = Objective(
    name="ssim",
    curve="ssim",
    label="SSIM",
    unit="",
    within=0.001,  # about what 0.05 dB of PSNR moves SSIM near 0.9 on the landscape
    needs_clean=True,
    score=lambda reading: calculate_ssim(reading.denoised, reading.clean),
)
