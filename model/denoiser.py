"""Training and inference of Self2Self+ on one image (plain PyTorch, no Ray).

    result = denoise(noisy, S2SConfig(p=0.4, steps=4000))   # noisy: (H, W, C) float32 in [0, 1]

Training (paper "Training Scheme"): each step masks the image afresh, predicts it with
dropout, and minimises the L1 error on the dropped entries plus λ_IQA (100 - PaQ-2-PiQ)^2.
Inference (paper Eq. 8): the mean of `passes` dropout nets, each fed its own masked
instance, then clamped to [0, 1].
"""

import contextlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import torch

from model.config import S2SConfig
from model.losses import iqa_loss, load_iqa_model, masked_l1_loss
from model.masking import INFERENCE_STREAM, INIT_STREAM, TRAIN_STREAM, bernoulli_mask, make_generator
from model.network import S2SPlusNet, check_image_size, pad_to_network

# Peak activation bytes of one inference pass per padded pixel in fp32 (measured: ~1.3 KB,
# rounded up); sizes batches of passes to the memory budget.
PASS_BYTES_PER_PIXEL = 2048

# on_step(step, steps, loss) is called every `log_every` steps and after the last one
StepCallback = Callable[[int, int, float], None]
# on_pass(passes_done, passes) is called after each batch of inference passes
PassCallback = Callable[[int, int], None]


@dataclass
class DenoiseResult:
    denoised: np.ndarray  # (H, W, C) float32 in [0, 1]
    losses: list[tuple[int, float]]  # (step, total loss) at each read-out
    train_seconds: float
    inference_seconds: float
    device: str


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but no CUDA GPU is visible; use --device cpu or auto")
    return device


def autocast(config: S2SConfig, device: torch.device):
    """bf16 autocast when asked (or 'auto' on CUDA); a no-op context in fp32."""
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_batch(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, C) array -> (1, C, H', W') float tensor reflect-padded to the network's size."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return pad_to_network(tensor.to(device))


def build_network(channels: int, config: S2SConfig, device: torch.device) -> torch.nn.Module:
    net = S2SPlusNet(channels, config.p)
    net.reset_parameters(make_generator(torch.device("cpu"), config.seed, INIT_STREAM))
    net = net.to(device)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def train(
    net: S2SPlusNet,
    noisy: torch.Tensor,
    height: int,
    width: int,
    config: S2SConfig,
    on_step: StepCallback | None = None,
    checkpoints: Collection[int] = (),
    on_checkpoint: Callable[[int], None] | None = None,
) -> list[tuple[int, float]]:
    """Train `net` on the padded image `noisy` (1, C, H', W'); losses see only the top-left
    height x width region, i.e. the real image, not its reflected padding.
    `on_checkpoint(step)` runs after each step listed in `checkpoints`."""
    device = noisy.device
    iqa_model = load_iqa_model(config.iqa_weights, str(device)) if config.lambda_iqa > 0 else None
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, 0.999), fused=device.type == "cuda")
    forward = torch.compile(net) if config.compile else net
    generator = make_generator(device, config.seed, TRAIN_STREAM)
    if config.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    image = noisy[..., :height, :width]
    losses = []
    net.train()
    for step in range(1, config.steps + 1):
        mask = bernoulli_mask(noisy.shape[1:], config.p, [generator], device)
        with autocast(config, device):
            output = forward(noisy, mask, [generator])[..., :height, :width].float()
        loss = masked_l1_loss(output, image, mask[..., :height, :width])
        if iqa_model is not None:
            loss = loss + config.lambda_iqa * iqa_loss(iqa_model, output)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % config.log_every == 0 or step == config.steps:
            losses.append((step, loss.item()))  # the only host sync of the loop
            if on_step:
                on_step(step, config.steps, losses[-1][1])
        if step in checkpoints and on_checkpoint:
            on_checkpoint(step)
    return losses


def passes_per_batch(config: S2SConfig, padded_pixels: int, device: torch.device) -> int:
    """How many inference passes fit the activation memory budget at once.

    The automatic budget is half the free GPU memory on CUDA, and one pass at a time on
    CPU, where larger batches measured slower (their activations fall out of cache).
    """
    budget_bytes = config.inference_memory_mb * 2**20
    if budget_bytes == 0 and device.type == "cuda":
        budget_bytes = torch.cuda.mem_get_info(device)[0] // 2
    return max(1, min(config.passes, budget_bytes // (padded_pixels * PASS_BYTES_PER_PIXEL)))


@torch.inference_mode()
def infer(
    net: S2SPlusNet,
    noisy: torch.Tensor,
    config: S2SConfig,
    batch_size: int | None = None,
    on_pass: PassCallback | None = None,
) -> torch.Tensor:
    """Mean of `passes` dropout passes over the padded image (1, C, H', W'), clamped to [0, 1].

    Pass i draws its mask and dropout from its own generator seeded (seed, i), and the
    passes are summed in float64 in pass order: any batch size gives the sequential result.
    """
    device = noisy.device
    batch_size = batch_size or passes_per_batch(config, noisy.shape[-2] * noisy.shape[-1], device)
    total = torch.zeros(noisy.shape[1:], dtype=torch.float64, device=device)
    for start in range(0, config.passes, batch_size):
        count = min(batch_size, config.passes - start)
        generators = [make_generator(device, config.seed, INFERENCE_STREAM, i) for i in range(start, start + count)]
        masks = bernoulli_mask(noisy.shape[1:], config.p, generators, device)
        batch = noisy.expand(count, -1, -1, -1)
        if config.channels_last:
            batch, masks = (t.contiguous(memory_format=torch.channels_last) for t in (batch, masks))
        with autocast(config, device):
            outputs = net(batch, masks, generators).double()
        for output in outputs:
            total += output
        if on_pass:
            on_pass(start + count, config.passes)
    return (total / config.passes).clamp(0.0, 1.0)[None].float()


def prepare(noisy: np.ndarray, config: S2SConfig) -> tuple[S2SPlusNet, torch.Tensor]:
    """A freshly initialised network and the padded image (1, C, H', W') on the run's device."""
    height, width, channels = noisy.shape
    check_image_size(height, width)
    device = resolve_device(config.device)
    return build_network(channels, config, device), to_batch(noisy, device)


def to_image(estimate: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(1, C, H', W') padded estimate -> (height, width, C) float32 array."""
    return estimate[0, :, :height, :width].permute(1, 2, 0).cpu().numpy()


def denoise(
    noisy: np.ndarray,
    config: S2SConfig,
    on_step: StepCallback | None = None,
    on_pass: PassCallback | None = None,
) -> DenoiseResult:
    """Train a fresh Self2Self+ network on `noisy` (H, W, C) in [0, 1] and return its denoised estimate."""
    height, width, _ = noisy.shape
    net, padded = prepare(noisy, config)
    started = time.perf_counter()
    losses = train(net, padded, height, width, config, on_step)
    trained = time.perf_counter()
    denoised = to_image(infer(net, padded, config, on_pass=on_pass), height, width)
    return DenoiseResult(
        denoised=denoised,
        losses=losses,
        train_seconds=trained - started,
        inference_seconds=time.perf_counter() - trained,
        device=str(padded.device),
    )


def denoise_at_steps(noisy: np.ndarray, config: S2SConfig, steps: list[int], passes: int) -> list[np.ndarray]:
    """Train once up to max(steps) and return the `passes`-pass estimate at each of `steps`:
    the PSNR-vs-steps curve of one training, used as the fidelity axis of the sweep."""
    height, width, _ = noisy.shape
    net, padded = prepare(noisy, config)
    estimates = []

    def estimate(step: int) -> None:
        estimates.append(to_image(infer(net, padded, config.replace(passes=passes)), height, width))

    train(net, padded, height, width, config.replace(steps=max(steps)), checkpoints=set(steps), on_checkpoint=estimate)
    return estimates
