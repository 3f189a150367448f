"""The held-out score (metrics.calculate_heldout_psnr): PSNR of each entry's prediction by the
passes that dropped it, against the noisy image. Needs no clean image, so it can tune a folder
without references; it ranks settings as PSNR does only where the noise is independent between
neighbouring entries (docs/sweep.md), so a family may use it only where its space file records that
agreement (`search.agreement.heldout` >= base.MIN_AGREEMENT)."""

from s2s_sweep.metrics import calculate_heldout_psnr
from s2s_sweep.objectives.base import Objective

HELDOUT = Objective(
    name="heldout",
    curve="heldout_psnr",
    label="held-out PSNR against the noisy image (dB)",
    unit="dB",
    within=0.05,
    needs_clean=False,
    score=lambda reading: calculate_heldout_psnr(reading.heldout, reading.noisy),
)
