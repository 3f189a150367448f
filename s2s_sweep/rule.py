"""The project's rule for calling one setting better, equal or worse than another, stated before
measuring (issue "tell better from worse"): paired over the same images, the lower end of the 95%
Student-t interval of the mean PSNR difference (candidate − reference) is above −0.1 dB. The
benchmarks judge their settings by it (benchmarks/common.py) and a sweep judges its best against the
paper's configuration by it (sweep/validation.py).
"""

import math

import numpy as np

RULE_MARGIN_DB = 0.1  # the rule: lower end of the 95% interval above −RULE_MARGIN_DB


def paired_rule(candidate: list[float], reference: list[float], margin_db: float = RULE_MARGIN_DB) -> dict:
    """The rule on per-image PSNRs of a candidate and a reference (same images, same order).

    Returns n, the mean difference and its 95% interval (Student's t over images), whether the
    rule passes, and `images_needed`: how many images the verdict would need to pass at the
    measured mean and spread of the differences (None where the mean itself is at or below
    −margin, so no number of images would show it)."""
    from scipy import stats

    differences = np.asarray(candidate, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    n = len(differences)
    mean = float(differences.mean()) if n else math.nan
    if n < 2:
        return {
            "n": n,
            "mean_db": mean,
            "ci95_db": [math.nan, math.nan],
            "sd_db": math.nan,
            "passes": False,
            "images_needed": None,
        }
    sd = float(differences.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    room = mean + margin_db  # how far the mean sits above the rule's bound
    needed = None if room <= 0 else max(2, math.ceil((1.96 * sd / room) ** 2))
    return {
        "n": n,
        "mean_db": mean,
        "ci95_db": [mean - half, mean + half],
        "sd_db": sd,
        "passes": bool(mean - half > -margin_db),
        "images_needed": needed,
    }
