"""The rule by which the benchmarks call one setting better, equal or worse (benchmarks/common.py),
and bench_variance's summary of made-up trainings."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from common import paired_rule  # noqa: E402


def test_the_rule_is_a_t_interval_over_images_against_minus_a_tenth_of_a_db():
    reference = [30.0, 31.0, 29.0, 32.0, 30.5]
    differences = np.array([0.1, -0.05, 0.2, 0.0, 0.05])
    result = paired_rule(list(np.array(reference) + differences), reference)
    half = 2.7764451051977987 * differences.std(ddof=1) / np.sqrt(5)  # t(0.975, 4)
    assert result["n"] == 5
    assert result["mean_db"] == pytest.approx(differences.mean())
    assert result["ci95_db"] == pytest.approx([differences.mean() - half, differences.mean() + half])
    assert result["passes"] is True


def test_a_noisy_difference_fails_and_says_how_many_images_it_would_need():
    reference = np.linspace(28.0, 33.0, 8)
    differences = np.array([0.4, -0.4, 0.3, -0.3, 0.5, -0.5, 0.1, -0.1])  # equal on average, 0.36 dB apart per image
    result = paired_rule(list(reference + differences), list(reference))
    assert result["passes"] is False
    assert result["images_needed"] == int(np.ceil((1.96 * differences.std(ddof=1) / 0.1) ** 2))
    worse = paired_rule(list(reference - 0.5), list(reference))
    assert worse["passes"] is False and worse["images_needed"] is None  # a mean below −0.1 dB is never shown equal


def test_bench_variance_summary_measures_spread_jitter_and_the_rule(tmp_path):
    steps = [100, 200, 300, 400]
    rows = []
    for image, base in (("a", 30.0), ("b", 28.0), ("c", 33.0)):
        for seed, offset in (
            (0, -0.5),
            (1, 0.5),
        ):  # raw: seeds 1 dB apart; ema: 0.2 dB apart, 0.05 dB above raw on average
            curves = {
                "raw": {"psnr": [base - 2, base + offset + 0.4, base + offset - 0.4, base + offset], "ssim": [0.8] * 4},
                "ema0.99": {"psnr": [base - 2, base + 0.05, base + 0.05, base + offset / 5 + 0.05], "ssim": [0.8] * 4},
            }
            rows.append(
                {
                    "dataset": "polyu",
                    "image_id": image,
                    "seed": seed,
                    "steps": steps,
                    "curves": curves,
                    "final_passes_psnr": base + offset + 0.1,
                    "passes": 50,
                    "final_passes": 500,
                }
            )
    (tmp_path / "bench_variance_polyu.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_variance.py", "summary", "--pieces", str(tmp_path), "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    kind = json.loads(out.read_text())["kinds"]["polyu"]
    assert kind["images"] == 3 and kind["seeds"] == 2
    raw, ema = kind["readouts"]["raw"], kind["readouts"]["ema0.99"]
    assert raw["seed_spread_db"] == pytest.approx(np.std([-0.5, 0.5], ddof=1))
    assert ema["seed_spread_db"] == pytest.approx(np.std([-0.1, 0.1], ddof=1))
    assert raw["jitter_mean_abs_db"] == pytest.approx(0.6)  # last half: steps 200..400, |Δ| 0.8 then 0.4
    assert kind["ensemble_noise_db"] == pytest.approx(0.1)
    assert ema["rule_vs_raw"]["mean_db"] == pytest.approx(0.05)
    assert ema["halves_seed_spread"] is True
    assert "ema0.99" not in json.loads(out.read_text())["adoptable"]  # one kind only: nothing is adopted
