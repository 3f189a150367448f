"""The CUDA branches: fused Adam, bf16 autocast, inference batched by free GPU memory, fractional
GPUs per image. They run where a CUDA GPU is visible and skip elsewhere with the reason; the CPU
halves of the same decisions are tested in test_denoiser.py and test_runner.py."""

import numpy as np
import pytest
import torch

from model.config import S2SConfig
from model.denoiser import autocast, build_network, denoise, infer, make_optimizer, to_batch
from model.memory import passes_per_batch
from s2s_sweep.metrics import calculate_psnr

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: none is visible here (no GPU on this machine)"
)
CUDA = torch.device("cuda")


def test_training_on_cuda_uses_fused_adam_and_denoises_in_fp32_and_bf16(astronaut_pair):
    noisy, clean = astronaut_pair
    net = build_network(3, S2SConfig(), CUDA)
    assert make_optimizer(net, S2SConfig(), CUDA).defaults["fused"] is True
    for precision in ("fp32", "bf16"):
        result = denoise(noisy, S2SConfig(steps=60, passes=8, lambda_iqa=0.0, device="cuda", precision=precision))
        assert result.device.startswith("cuda") and np.isfinite(result.denoised).all()
        assert calculate_psnr(result.denoised, clean) > calculate_psnr(noisy, clean) + 2, precision


def test_bf16_autocast_runs_the_network_in_bf16_on_cuda():
    config = S2SConfig(precision="bf16", device="cuda")
    conv = torch.nn.Conv2d(3, 4, 3).to(CUDA)
    with autocast(config, CUDA):
        assert conv(torch.rand(1, 3, 8, 8, device=CUDA)).dtype == torch.bfloat16
    with autocast(config.replace(precision="fp32"), CUDA):
        assert conv(torch.rand(1, 3, 8, 8, device=CUDA)).dtype == torch.float32


def test_inference_batches_passes_by_free_gpu_memory_with_the_sequential_result():
    config = S2SConfig(passes=12, lambda_iqa=0.0, device="cuda")
    free = torch.cuda.mem_get_info(CUDA)[0]
    assert passes_per_batch(config, 64 * 64, "cuda", free) == 12  # a 64² pass is a few MB
    assert passes_per_batch(config, 64 * 64, "cuda", 0) == 1
    net = build_network(3, config, CUDA)
    noisy = to_batch(np.random.default_rng(0).random((64, 64, 3), dtype=np.float32), CUDA)
    sequential = infer(net, noisy, config, batch_size=1)
    torch.testing.assert_close(
        infer(net, noisy, config), sequential, rtol=0, atol=1e-5, equal_nan=True
    )  # cuDNN may pick other kernels per batch


def test_fractional_gpus_pack_two_images_on_one_gpu(tmp_path):
    import ray

    from s2s_sweep.datasets import open_dataset
    from s2s_sweep.methods import Method
    from s2s_sweep.runner import RunOptions, run_dataset

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_dataset(
            open_dataset("demo").select(limit=2),
            Method(config=S2SConfig(steps=3, passes=2, lambda_iqa=0.0)),
            RunOptions(out=str(tmp_path), run_id="gpu", gpus_per_image=0.5, flush_seconds=0),
        )
    finally:
        ray.shutdown()
    table = outcome.table.to_pandas()
    assert len(table) == 2 and table["error"].isna().all()
    assert table["device"].str.startswith("cuda").all()
    half_gpu_mb = torch.cuda.get_device_properties(0).total_memory / 2**20 / 2
    assert (table["memory_mb"] <= half_gpu_mb).all()  # each planned within its half of the GPU (gpu_share_memory_mb)
