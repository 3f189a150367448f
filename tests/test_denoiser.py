from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import BF16_AUTO, S2SConfig, native_bf16
from model.denoiser import Estimate, build_network, denoise, ensemble, infer, make_optimizer, resolve_device, to_batch
from model.masking import INFERENCE_STREAM, bernoulli_mask, make_generator
from model.memory import passes_per_batch
from s2s_sweep.metrics import calculate_psnr

CPU = torch.device("cpu")
TINY = S2SConfig(steps=3, passes=4, lambda_iqa=0.0, log_every=1)


@pytest.mark.parametrize("channels_last", [True, False])
def test_batched_inference_equals_sequential_for_any_batch_size(channels_last):
    config = S2SConfig(passes=7, lambda_iqa=0.0, channels_last=channels_last)
    net = build_network(3, config, CPU)
    noisy = to_batch(np.random.default_rng(0).random((40, 50, 3), dtype=np.float32), CPU)
    sequential = infer(net, noisy, config, batch_size=1)
    assert sequential.denoised.shape == sequential.heldout.shape == noisy.shape
    assert 0.0 <= sequential.denoised.min().item() and sequential.denoised.max().item() <= 1.0
    for batch_size in (2, 3, 7):
        torch.testing.assert_close(
            infer(net, noisy, config, batch_size=batch_size), sequential, rtol=0, atol=1e-6, equal_nan=True
        )


def test_inference_averages_distinct_dropout_passes():
    config = S2SConfig(passes=1, lambda_iqa=0.0)
    net = build_network(3, config, CPU)
    noisy = to_batch(np.full((64, 64, 3), 0.5, dtype=np.float32), CPU)
    one = infer(net, noisy, config).denoised
    two = infer(net, noisy, config.replace(passes=2)).denoised
    assert not torch.equal(one, two)


def test_heldout_estimate_never_sees_the_entry_it_predicts():
    """Noise2Self's J-invariance, per entry: its held-out prediction comes only from passes whose
    input dropped it, so changing that entry's noisy value leaves it unchanged."""
    config = S2SConfig(passes=6, lambda_iqa=0.0)
    net = build_network(3, config, CPU)
    image = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)

    def unclamped(image):  # an untrained net's output lies mostly outside [0, 1]
        mean, heldout = ensemble(net, to_batch(image, CPU), config, batch_size=2, on_batch=lambda count: None)
        return Estimate(mean[None], heldout[None])

    before = unclamped(image)
    image[30, 20, 1] = 1.0 - image[30, 20, 1]  # an interior entry (reflect padding copies the border ones)
    after = unclamped(image)
    assert after.heldout[0, 1, 30, 20] == before.heldout[0, 1, 30, 20]
    assert after.denoised[0, 1, 30, 20] != before.denoised[0, 1, 30, 20]  # the passes that kept it saw the change
    never_dropped = before.heldout.isnan().float().mean().item()
    assert abs(never_dropped - (1 - config.p) ** config.passes) < 0.01  # NaN exactly where no pass dropped the entry


def test_heldout_estimate_of_one_pass_is_that_pass_where_it_dropped_the_entry():
    config = S2SConfig(passes=1, lambda_iqa=0.0)
    net = build_network(3, config, CPU)
    noisy = to_batch(np.random.default_rng(2).random((64, 64, 3), dtype=np.float32), CPU)
    estimate = infer(net, noisy, config)
    kept = bernoulli_mask(noisy.shape[1:], config.p, [make_generator(CPU, config.seed, INFERENCE_STREAM, 0)], CPU)[
        0
    ].bool()
    assert estimate.heldout[0][kept].isnan().all()
    assert torch.equal(estimate.heldout[0][~kept], estimate.denoised[0][~kept])


def test_adam_is_fused_on_cuda_only():  # the CUDA half: test_cuda.py
    config = S2SConfig()
    assert make_optimizer(build_network(3, config, CPU), config, CPU).defaults["fused"] is False


def test_memory_budget_sizes_the_batches():
    config = S2SConfig(passes=500, inference_memory_mb=64)
    assert passes_per_batch(config, 64 * 64, "cpu") == 7
    assert passes_per_batch(config, 4096 * 4096, "cpu") == 1
    assert passes_per_batch(config.replace(passes=3), 64 * 64, "cpu") == 3


def test_same_seed_same_result_other_seed_other_result():
    image = np.random.default_rng(1).random((48, 48, 3), dtype=np.float32)
    first = denoise(image, TINY)
    again = denoise(image, TINY)
    other = denoise(image, TINY.replace(seed=1))
    assert np.array_equal(first.denoised, again.denoised)
    assert first.losses == again.losses
    assert not np.array_equal(first.denoised, other.denoised)


def test_result_keeps_the_input_size_and_channels():
    for shape in [(50, 70, 3), (40, 33, 1)]:
        image = np.random.default_rng(2).random(shape, dtype=np.float32)
        result = denoise(image, TINY)
        assert result.denoised.shape == shape and result.denoised.dtype == np.float32
        assert [step for step, _ in result.losses] == [1, 2, 3]
        assert result.device == "cpu" and result.train_seconds > 0 and result.inference_seconds > 0


def test_too_small_image_is_rejected_before_training():
    with pytest.raises(ValueError, match="too small"):
        denoise(np.zeros((16, 64, 3), np.float32), TINY)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("p", 0.0, r"p: expected a probability in \(0, 1\)"),
        ("p", 1.2, "p: expected"),
        ("steps", 0, "steps: expected an integer >= 1"),
        ("lambda_iqa", -1e-8, "lambda_iqa: expected a number >= 0"),
        ("passes", 0, "passes: expected an integer >= 1"),
        ("precision", "fp16", "precision: expected one of auto, fp32, bf16"),
    ],
)
def test_out_of_range_hyperparameters_name_the_field(field, value, expected):
    with pytest.raises(ValueError, match=expected):
        S2SConfig(**{field: value})


def test_cuda_requested_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU


def test_iqa_loss_changes_training(iqa_weights_dir):
    image = np.random.default_rng(3).random((64, 64, 3), dtype=np.float32)
    without = denoise(image, TINY)
    with_iqa = denoise(image, TINY.replace(lambda_iqa=1e-4, iqa_weights=iqa_weights_dir))
    # same seed, same masks: the first loss differs by exactly the IQA term, later weights differ too
    assert with_iqa.losses[0][1] > without.losses[0][1]
    assert not np.array_equal(with_iqa.denoised, without.denoised)


@pytest.mark.slow
def test_short_training_denoises_a_real_photograph(astronaut_pair):
    noisy, clean = astronaut_pair
    result = denoise(noisy, S2SConfig(p=0.4, steps=100, passes=30, lambda_iqa=0.0, seed=0))
    gain = calculate_psnr(result.denoised, clean) - calculate_psnr(noisy, clean)
    assert gain > 2.0, f"PSNR gain {gain:.2f} dB"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the Linux kernel reports them (independent of torch's probe)."""
    with open("/proc/cpuinfo") as file:
        return {flag for line in file if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


@pytest.mark.skipif(
    not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo to check the detection against"
)
def test_bf16_is_detected_as_native_exactly_where_the_cpu_has_it_and_auto_runs_what_the_benchmark_decided(
    astronaut_pair,
):
    assert native_bf16("cpu") is bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    expected = "bf16" if "cpu" in BF16_AUTO and native_bf16("cpu") else "fp32"  # bench_precision's decision
    assert S2SConfig(precision="auto").precision_on("cpu") == expected
    noisy, _ = astronaut_pair
    auto = denoise(noisy, S2SConfig(steps=2, passes=1, lambda_iqa=0.0, precision="auto", device="cpu")).denoised
    named = denoise(noisy, S2SConfig(steps=2, passes=1, lambda_iqa=0.0, precision=expected, device="cpu")).denoised
    np.testing.assert_array_equal(auto, named)  # auto runs exactly the arithmetic it names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: none is visible here")
def test_bf16_is_native_on_cuda_from_ampere_on_and_auto_follows_the_benchmark():
    major, _ = torch.cuda.get_device_capability()
    assert native_bf16("cuda") is (major >= 8)  # Ampere and later have bf16 units
    expected = "bf16" if "cuda" in BF16_AUTO and major >= 8 else "fp32"
    assert S2SConfig(precision="auto").precision_on("cuda") == expected


def test_auto_takes_bf16_on_a_device_type_the_benchmark_passed_only_where_that_hardware_has_it_natively(
    monkeypatch,
):
    import model.config

    monkeypatch.setattr(model.config, "BF16_AUTO", frozenset({"cpu"}))  # as if bench_precision had passed on CPUs
    assert S2SConfig(precision="auto").precision_on("cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert S2SConfig(precision="auto").precision_on("cuda") == "fp32"  # not passed there
    assert S2SConfig(precision="fp32").precision_on("cpu") == "fp32"  # a named precision is never overridden
