"""The rule by which the benchmarks call one setting better, equal or worse (benchmarks/common.py),
bench_variance's summary of made-up trainings, and what bench_layout pairs with."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from common import QUANTIZE, paired_rule  # noqa: E402

from model.config import S2SConfig  # noqa: E402
from model.denoiser import denoise  # noqa: E402
from s2s_sweep.images import to_uint8  # noqa: E402
from s2s_sweep.metrics import calculate_psnr  # noqa: E402


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
            if image != "c":  # --lr-decay 0.3 trained for two images: raw ends 4x closer together, 0.02 dB higher
                decayed = {"psnr": [base - 2, base, base, base + offset / 4 + 0.02], "ssim": [0.8] * 4}
                rows.append({**rows[-1], "lr_decay": 0.3, "curves": {**curves, "raw": decayed}})
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
    decayed = kind["readouts"]["lr_decay0.3"]  # paired with the held trainings of the same images and seeds
    assert decayed["images"] == 2 and decayed["seeds"] == 2
    assert decayed["seed_spread_db"] == pytest.approx(np.std([-0.125, 0.125], ddof=1))
    assert decayed["rule_vs_raw"]["mean_db"] == pytest.approx(0.02) and decayed["rule_vs_raw"]["n"] == 2


def test_bench_warm_judges_warm_at_half_the_steps_by_the_rule_over_images():
    from bench_warm import DEFAULT_SEED_STEPS, summarise_kind

    def row(image: str, seed_image: str | None, psnr: list[float]) -> dict:
        steps = [400, 800] if seed_image is None else [200, 400]
        seed_steps = DEFAULT_SEED_STEPS if seed_image else 0
        return {"dataset": "polyu", "image_id": image, "seed_image": seed_image, "seed_steps": seed_steps}, {
            "steps": steps,
            "psnr": psnr,
            "noisy_psnr": 20.0,
        }

    gains = {"a": 0.3, "b": 0.2, "c": 0.25, "d": -2.0}  # warm 400 − cold 800: one image far below
    rows = []
    for image, gain in gains.items():
        for key, values in (row(image, None, [30.0, 31.0]), row(image, "s", [30.5, 31.0 + gain])):
            rows.append(key | values)
    (horizon,) = [h for h in summarise_kind(rows)["horizons"] if h["cold_steps"] == 800]
    rule = horizon["rule_per_seed"]["s"]
    assert rule == paired_rule([31.0 + gain for gain in gains.values()], [31.0] * 4)
    assert rule["mean_db"] == pytest.approx(np.mean(list(gains.values()))) and rule["passes"] is False


def test_bench_variance_records_as_raw_final_read_out_what_a_plain_run_ends_with(astronaut_pair):
    """bench_layout pairs an NCHW run with that read-out instead of training channels_last again."""
    from bench_layout import nchw_training
    from bench_variance import trajectory

    noisy, clean = (image[:48, :48] for image in astronaut_pair)
    config = S2SConfig(p=0.4, lambda_iqa=0.0, precision="fp32", seed=3)
    readouts = argparse.Namespace(ema_decays=[0.99], window=2, passes=4, final_passes=8)
    recorded = trajectory(noisy, clean, config, [5, 10], readouts)["curves"]["raw"]["psnr"][-1]
    plain = denoise(noisy, config.replace(steps=10, passes=4)).denoised
    assert calculate_psnr(to_uint8(plain, QUANTIZE), clean) == recorded
    reference = {"p": 0.4, "steps": [5, 10], "passes": 4, "precision": "fp32", "seed": 3}
    nchw = nchw_training(noisy, clean, reference, "cpu")
    assert nchw["seconds"] > 0 and abs(nchw["psnr"] - recorded) < 1.0  # the other layout, the same training nearly


def test_bench_layout_judges_nchw_by_the_rule_over_images_means_over_seeds():
    from bench_layout import summarise_kind

    rows = [
        {"image_id": image, "seed": seed, "psnr": base + shift, "reference_psnr": base}
        for image, base, shifts in (("a", 30.0, (0.02, -0.02)), ("b", 28.0, (0.01, 0.03)), ("c", 33.0, (0.0, -0.01)))
        for seed, shift in enumerate(shifts)
    ]
    entry = summarise_kind(rows)
    assert entry["images"] == 3 and entry["trainings"] == 6
    assert entry["largest_training_difference_db"] == pytest.approx(0.03)
    per_image = [30.0, 28.02, 32.995]  # NCHW's mean over the two seeds of each image
    expected = paired_rule(per_image, [30.0, 28.0, 33.0])
    assert entry["rule"]["passes"] and entry["rule"]["mean_db"] == pytest.approx(expected["mean_db"])
    assert entry["rule"]["ci95_db"] == pytest.approx(expected["ci95_db"])


def test_bench_warm_matches_each_image_to_the_pool_seed_of_the_nearest_noise_and_sums_them_up_as_one_seed():
    from bench_warm import DEFAULT_SEED_STEPS, matched_seed, summarise_kind

    pool = {"iso100": 4.0, "iso1600": 12.0, "iso3200": 18.0}
    assert [matched_seed(sigma, pool) for sigma in (3.0, 9.0, 15.1, 40.0)] == [
        "iso100",
        "iso1600",
        "iso3200",
        "iso3200",
    ]
    rows = []
    for image, seed_image, gain in (("a", "iso100", 0.2), ("b", "iso3200", 0.1), ("c", "iso100", 0.3)):
        base = {"dataset": "polyu", "image_id": image, "noisy_psnr": 20.0}
        rows.append(base | {"seed_image": None, "seed_steps": 0, "steps": [400, 800], "psnr": [30.0, 31.0]})
        warm = {"seed_image": seed_image, "seed_steps": DEFAULT_SEED_STEPS, "matched": True}
        rows.append(base | warm | {"steps": [200, 400], "psnr": [30.5, 31.0 + gain]})
    entry = summarise_kind(rows)
    assert entry["seed_images"] == ["matched"] and entry["images"] == 3  # one seed per image, one column
    (horizon,) = [h for h in entry["horizons"] if h["cold_steps"] == 800]
    assert horizon["rule_per_seed"]["matched"]["mean_db"] == pytest.approx(0.2)


def test_bench_variance_sees_a_seed_noise_shared_across_images_and_none_where_each_image_has_its_own():
    from bench_variance import shared_seed_noise

    rng = np.random.default_rng(1)
    trend = np.linspace(20.0, 30.0, 9)  # (read-outs,) the curve every image climbs
    per_seed = rng.normal(0.0, 1.0, (3, 9))  # what each seed's mask stream does, the same on every image
    shared = trend + per_seed[None] + rng.normal(0.0, 0.1, (6, 3, 9))  # (images, seeds, read-outs)
    independent = trend + rng.normal(0.0, 1.0, (6, 3, 9))
    assert shared_seed_noise(shared, 500)["mean_r"] > 0.8 and shared_seed_noise(shared, 500)["p"] < 0.01
    assert abs(shared_seed_noise(independent, 500)["mean_r"]) < 0.2 and shared_seed_noise(independent, 500)["p"] > 0.05


def test_bench_variance_pools_the_kinds_shared_seed_noise_against_their_independent_nulls():
    from bench_variance import pooled_seed_noise, shared_seed_noise

    rng = np.random.default_rng(2)
    trend = np.linspace(20.0, 30.0, 9)
    weakly_shared = [  # per kind: a seed's stream adds the same 0.5 dB-scale wiggle to every image, under 1 dB of noise
        trend + 0.5 * rng.normal(0.0, 1.0, (3, 9))[None] + rng.normal(0.0, 1.0, (8, 3, 9)) for _ in range(2)
    ]
    kinds = [shared_seed_noise(curves, 500, seed) for seed, curves in enumerate(weakly_shared)]
    pooled = pooled_seed_noise(kinds)
    assert pooled["mean_r"] == pytest.approx(np.mean([kind["mean_r"] for kind in kinds])) and pooled["kinds"] == 2
    assert pooled["p"] < 0.05
    independent = [shared_seed_noise(trend + rng.normal(0.0, 1.0, (8, 3, 9)), 500, seed) for seed in range(2)]
    assert pooled_seed_noise(independent)["p"] > 0.05


def precision_rows(kind: str, images: int, gap_db: float, native: bool | None, seeding: str | None) -> list[dict]:
    """Made-up bench_precision rows: bf16 `gap_db` off fp32 on every image, ±0.05 dB of jitter."""
    rows = []
    for index in range(images):
        p = 0.7 if kind == "polyu" else 0.4  # each kind's paper p, as the benchmark trains it
        protocol = {"dataset": kind, "image_id": f"{index:04d}", "side": 96, "p": p, "steps": 800, "passes": 50}
        protocol |= {"device": "cuda"} | ({"seeding": seeding} if seeding else {})
        fp32 = 30.0 + index % 5
        bf16 = fp32 + gap_db + (0.05 if index % 2 else -0.05)
        for precision, psnr, seconds in (("fp32", fp32, 2.0), ("bf16", bf16, 1.0)):
            row = protocol | {"precision": precision, "psnr": psnr, "ssim": 0.9, "seconds": seconds}
            rows.append(row | ({"native_bf16": native} if native is not None else {}))
    return rows


@pytest.mark.parametrize(
    "images, gap_db, native, decided",
    [
        (16, 0.0, True, ["cuda"]),  # native, enough images, equal: auto takes bf16
        (8, 0.0, True, []),  # too few images for a default, however well they agree
        (16, -0.3, True, []),  # the rule fails
        (16, 0.0, False, []),  # emulated: its equality says nothing of native speed
        (16, 0.0, None, []),  # native-ness not recorded (rows from before it was)
    ],
)
def test_bench_precision_lets_auto_take_bf16_only_from_a_native_measurement_of_enough_images_passing_the_rule(
    tmp_path, images, gap_db, native, decided
):
    pieces = tmp_path / "pieces.jsonl"
    rows = [row for kind in ("cbsd68-25", "polyu") for row in precision_rows(kind, images, gap_db, native, "image")]
    pieces.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "summary.json"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_precision.py"), "summary", "--pieces", pieces, "--json", out],
        check=True,
        cwd=REPO,
    )
    result = json.loads(out.read_text())
    assert result["auto_bf16"] == decided
    assert {entry["rule"]["n"] for entry in result["results"]} == {images}


def test_bench_precision_pairs_only_within_a_protocol_and_the_config_follows_its_committed_decision():
    from bench_precision import compare, protocol_of

    old = precision_rows("polyu", 2, 0.0, None, None)  # rows from before `seeding` was recorded
    new = precision_rows("polyu", 2, 0.0, True, "image")
    assert protocol_of(old[0])[-1] == "run" and protocol_of(old[0]) != protocol_of(new[0])
    assert compare([(old[0], old[1]), (old[2], old[3])])["native_bf16"] is None
    from model.config import BF16_AUTO

    committed = json.loads((REPO / "benchmarks" / "results" / "bench_precision.json").read_text())
    assert BF16_AUTO == frozenset(committed["auto_bf16"])  # the default is the benchmark's decision


def test_a_benchmark_summary_pairs_rows_of_one_seeding_the_per_image_one_where_there_is_any():
    from bench_warm import DEFAULT_SEED_STEPS, summarise_kind
    from common import one_seeding

    def rows(seeding: str | None, gain: float) -> list[dict]:
        out = []
        for image in ("a", "b", "c"):
            base = {"dataset": "polyu", "image_id": image, "noisy_psnr": 20.0}
            base |= {"seeding": seeding} if seeding else {}
            out.append(base | {"seed_image": None, "seed_steps": 0, "steps": [400, 800], "psnr": [30.0, 31.0]})
            warm = {"seed_image": "s", "seed_steps": DEFAULT_SEED_STEPS}
            out.append(base | warm | {"steps": [200, 400], "psnr": [30.5, 31.0 + gain]})
        return out

    old, new = rows(None, -1.0), rows("image", 0.2)  # old rows: before `seeding` was recorded
    assert one_seeding(old) == (old, "run")
    assert one_seeding(old + new) == (new, "image")
    entry = summarise_kind(old + new)
    (horizon,) = [h for h in entry["horizons"] if h["cold_steps"] == 800]
    assert entry["seeding"] == "image" and horizon["rule_per_seed"]["s"]["mean_db"] == pytest.approx(0.2)


def test_processes_sharing_a_kind_take_every_nth_item_and_a_bad_shard_is_named():
    from common import shard_of

    assert shard_of("1/3") == (1, 3)  # process 1 of 3: items 1, 4, 7, ... of its work
    for text in ("2/2", "1", "a/2", "-1/2"):
        with pytest.raises(argparse.ArgumentTypeError, match=rf"--shard '{text}': expected I/N"):
            shard_of(text)


def test_bench_warm_measures_the_estimated_noise_that_chose_a_seed_against_the_true_one(tmp_path):
    from bench_warm import noise_levels
    from PIL import Image

    folder = tmp_path / "PolyU" / "CroppedImages"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    clean = np.full((48, 48, 3), 128.0) + np.linspace(-20, 20, 48)[None, :, None]  # smooth, far from clipping
    for name, sigma in {"a": 3.0, "b": 6.0, "c": 12.0, "d": 24.0}.items():  # PNG data: lossless, opened by content
        Image.fromarray(clean.astype(np.uint8)).save(folder / f"{name}_mean.JPG", format="PNG")
        noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{name}_real.JPG", format="PNG")
    rows = [{"dataset": "polyu", "image_id": "a", "seed_image": "b", "matched": True, "side": 32}]
    rows += [{"dataset": "polyu", "image_id": "c", "seed_image": None, "matched": False, "side": 32}]  # cold
    levels = noise_levels("polyu", rows, str(tmp_path))
    assert levels["crops"] == 4 and levels["side"] == 32 and levels["spearman_estimated_true"] == pytest.approx(1.0)
    (image,) = levels["images"].items()
    assert image[0] == "a" and image[1]["seed"] == "b"
    assert image[1]["true"] == pytest.approx(3.0, rel=0.15) and image[1]["seed_true"] == pytest.approx(6.0, rel=0.15)
    assert image[1]["estimated"] == pytest.approx(3.0, rel=0.3)  # on white Gaussian noise the wavelet estimate holds
