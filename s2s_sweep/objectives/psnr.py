"""PSNR against the clean image (metrics.calculate_psnr): the paper's measure, the default objective."""

from s2s_sweep.metrics import calculate_psnr
from s2s_sweep.objectives.base import Objective

PSNR = Objective(
    name="psnr",
    curve="psnr",
    label="PSNR (dB)",
    unit="dB",
    within=0.05,
    needs_clean=True,
    score=lambda reading: calculate_psnr(reading.denoised, reading.clean),
)
