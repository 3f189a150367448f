"""Training and inference of Self2Self+ on one image (plain PyTorch, no Ray).

    result = denoise(noisy, S2SConfig(p=0.4, steps=4000))   # noisy: (H, W, C) float32 in [0, 1]

Training (paper "Training Scheme"): each step masks the image afresh, predicts it with
dropout, and minimises the L1 error on the dropped entries plus λ_IQA (100 - PaQ-2-PiQ)^2.
Inference (paper Eq. 8): the mean of `passes` dropout nets, each fed its own masked
instance, then clamped to [0, 1].
Images above 512 x 512 pixels train on random crops and infer over blended tiles, in a plan
that fits the memory budget (model/memory.py, model/tiles.py); smaller ones run as the paper.
"""

import contextlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import psutil
import torch

from model.averaging import WeightAverage
from model.config import S2SConfig
from model.errors import ImageUnusable
from model.losses import iqa_loss, load_iqa_model, masked_l1_loss
from model.masking import INFERENCE_STREAM, INIT_STREAM, TRAIN_STREAM, bernoulli_mask, make_generator
from model.memory import MB, Plan, fit_memory, passes_per_batch
from model.network import S2SPlusNet, pad_to_network
from model.sizes import check_image_size
from model.tiles import CropSampler, tiles

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
    plan: Plan  # whole image or crops, tiles, predicted memory


class DeviceUnavailable(ImageUnusable, ValueError):
    """A CUDA device was asked for where none is visible."""


class SeedMismatch(ImageUnusable, ValueError):
    """A warm start's seed network does not fit the image (another channel count)."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device: {name!r} requested but no CUDA GPU is visible; use --device cpu or auto")
    return device


def autocast(config: S2SConfig, device: torch.device):
    """bf16 autocast where the config's precision is bf16 on this device; a no-op in fp32."""
    if config.precision_on(device.type) != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def memory_budget(config: S2SConfig, device: torch.device) -> int:
    """Bytes one image may use: `memory_mb`, else the free GPU memory or the available RAM."""
    if config.memory_mb:
        return config.memory_mb * MB
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def to_batch(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, C) array -> (1, C, H', W') float tensor reflect-padded to the network's size."""
    tensor = torch.from_numpy(np.array(image, dtype=np.float32, order="C")).permute(2, 0, 1)[
        None
    ]  # a writable copy: Ray hands tasks read-only arrays
    return pad_to_network(tensor.to(device))


def build_network(channels: int, config: S2SConfig, device: torch.device) -> torch.nn.Module:
    net = S2SPlusNet(channels, config.p)
    net.reset_parameters(make_generator(torch.device("cpu"), config.seed, INIT_STREAM))
    net = net.to(device)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def make_optimizer(net: S2SPlusNet, config: S2SConfig, device: torch.device) -> torch.optim.Adam:
    """The authors' Adam; fused into one kernel per step on CUDA (same update, fewer launches)."""
    return torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, 0.999), fused=device.type == "cuda")


def learning_rate(config: S2SConfig, step: int) -> float:
    """Step `step`'s rate: config.lr, then over the last n = round(lr_decay x steps) steps a linear fall that
    reaches lr / (n + 1) at the final step (never 0: every step still learns)."""
    decayed = round(config.lr_decay * config.steps)
    remaining = config.steps - step + 1  # this step included
    return config.lr * min(1.0, remaining / (decayed + 1))


def train(
    net: S2SPlusNet,
    noisy: torch.Tensor,
    height: int,
    width: int,
    config: S2SConfig,
    plan: Plan,
    on_step: StepCallback | None = None,
    checkpoints: Collection[int] = (),
    on_checkpoint: Callable[[int], None] | None = None,
    averages: Collection[WeightAverage] = (),
) -> list[tuple[int, float]]:
    """Train `net` on the padded image `noisy` (1, C, H', W'): on the whole image (the paper),
    or on `plan.batch` random crops of side `plan.crop` per step. Losses see only the real
    height x width image, not its reflected padding.
    Each of `averages` folds in the weights after every step; `on_checkpoint(step)` runs after
    each step listed in `checkpoints`."""
    device = noisy.device
    iqa_model = load_iqa_model(config.iqa_weights, str(device)) if config.lambda_iqa > 0 else None
    optimizer = make_optimizer(net, config, device)
    forward = torch.compile(net) if config.compile else net
    generator = make_generator(device, config.seed, TRAIN_STREAM)
    crops = CropSampler(noisy, height, width, plan.crop, plan.batch, config.seed) if plan.crop else None
    valid_h, valid_w = crops.valid if crops else (height, width)
    if config.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    losses = []
    net.train()
    for step in range(1, config.steps + 1):
        batch = crops.sample() if crops else noisy  # (B, C, h, w)
        generators = [generator] * batch.shape[0]  # one stream, a fresh mask and dropout per crop
        mask = bernoulli_mask(batch.shape[1:], config.p, generators, device)
        with autocast(config, device):
            output = forward(batch, mask, generators)[..., :valid_h, :valid_w].float()
        loss = masked_l1_loss(output, batch[..., :valid_h, :valid_w], mask[..., :valid_h, :valid_w])
        if iqa_model is not None:
            loss = loss + config.lambda_iqa * iqa_loss(iqa_model, output)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.lr_decay:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
        optimizer.step()
        for average in averages:
            average.update(net)
        if step % config.log_every == 0 or step == config.steps:
            losses.append((step, loss.item()))  # the only host sync of the loop
            if on_step:
                on_step(step, config.steps, losses[-1][1])
        if step in checkpoints and on_checkpoint:
            on_checkpoint(step)
    return losses


class Estimate(NamedTuple):
    """What the dropout ensemble gives for a padded image, both (1, C, H', W') in [0, 1]."""

    denoised: torch.Tensor  # the mean of all passes (paper Eq. 8)
    # per entry, the mean of the passes whose input mask dropped it (NaN where none did): a prediction that never saw
    # that entry
    heldout: torch.Tensor


@torch.inference_mode()
def ensemble(
    net: S2SPlusNet, noisy: torch.Tensor, config: S2SConfig, batch_size: int, on_batch: Callable[[int], None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of `passes` dropout passes over one padded piece (1, C, h, w), and its held-out mean
    (see Estimate), both (C, h, w) float32.

    Pass i draws its mask and dropout from its own generator seeded (seed, i), and the
    passes are summed in float64 in pass order: any batch size gives the sequential result.
    """
    device = noisy.device
    total = torch.zeros(noisy.shape[1:], dtype=torch.float64, device=device)
    heldout_total, dropped_count = torch.zeros_like(total), torch.zeros_like(total)
    for start in range(0, config.passes, batch_size):
        count = min(batch_size, config.passes - start)
        generators = [make_generator(device, config.seed, INFERENCE_STREAM, i) for i in range(start, start + count)]
        masks = bernoulli_mask(noisy.shape[1:], config.p, generators, device)
        batch = noisy.expand(count, -1, -1, -1)
        if config.channels_last:
            batch, masks = (t.contiguous(memory_format=torch.channels_last) for t in (batch, masks))
        with autocast(config, device):
            outputs = net(batch, masks, generators).double()
        for output, mask in zip(outputs, masks):
            total += output
            dropped = 1.0 - mask
            heldout_total += output * dropped
            dropped_count += dropped
        on_batch(count)
    return (total / config.passes).float(), (heldout_total / dropped_count).float()


@torch.inference_mode()
def infer(
    net: S2SPlusNet,
    noisy: torch.Tensor,
    config: S2SConfig,
    tile: int = 0,
    batch_size: int | None = None,
    on_pass: PassCallback | None = None,
) -> Estimate:
    """The dropout ensemble's estimate of the padded image (1, C, H', W'), over the whole image
    (tile 0) or tile by tile with smooth blending (model/tiles.py)."""
    device = noisy.device
    pieces = tiles(noisy.shape[-2], noisy.shape[-1], tile)
    piece_pixels = pieces[0][2].numel()
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    batch_size = batch_size or passes_per_batch(config, piece_pixels, device.type, free)
    total = torch.zeros(noisy.shape[1:], device=device)
    heldout_total = torch.zeros_like(total)
    weight_sum = torch.zeros(noisy.shape[-2:], device=device)
    done = 0

    def count_passes(count: int) -> None:
        nonlocal done
        done += count
        if on_pass:
            on_pass(done, config.passes * len(pieces))

    for rows, columns, weights in pieces:
        weights = weights.to(device)
        mean, heldout = ensemble(net, noisy[..., rows, columns], config, batch_size, count_passes)
        total[:, rows, columns] += weights * mean
        heldout_total[:, rows, columns] += weights * heldout
        weight_sum[rows, columns] += weights
    return Estimate((total / weight_sum).clamp(0.0, 1.0)[None], (heldout_total / weight_sum).clamp(0.0, 1.0)[None])


def prepare(noisy: np.ndarray, config: S2SConfig, initial_state: dict | None = None) -> tuple[S2SPlusNet, torch.Tensor]:
    """The network (freshly initialised, or with `initial_state`'s weights: a warm start) and the
    padded image (1, C, H', W') on the run's device."""
    height, width, channels = noisy.shape
    check_image_size(height, width)
    device = resolve_device(config.device)
    net = build_network(channels, config, device)
    if initial_state is not None:
        seed_channels = initial_state["encoder_in.0.conv.weight"].shape[1] // 2  # mask + masked image
        if seed_channels != channels:
            raise SeedMismatch(
                f"init: the seed network was trained on {seed_channels}-channel images; this image has {channels} "
                "channels"
            )
        net.load_state_dict(initial_state)
    return net, to_batch(noisy, device)


def weight_averages(net: S2SPlusNet, config: S2SConfig) -> list[WeightAverage]:
    """The moving average of the weights a read-out uses (config.ema_decay > 0), or none: the raw weights."""
    return [WeightAverage(net, config.ema_decay)] if config.ema_decay else []


def read_out(net: S2SPlusNet, averages: list[WeightAverage]) -> S2SPlusNet:
    """The network inference runs: the averaged weights where there is an average, else `net` itself.
    An average is bias-corrected (model/averaging.py), so it can be read out at any step."""
    return averages[0].network(net) if averages else net


def train_seed(images: list[np.ndarray], config: S2SConfig) -> dict[str, torch.Tensor]:
    """Weights to warm-start other images from: a fresh network trained `config.steps` steps on each
    of `images` in turn (fresh Adam state each), as a CPU state dict."""
    net = None
    for noisy in images:
        height, width, _ = noisy.shape
        fresh, padded = prepare(noisy, config)
        net = fresh if net is None else net
        plan = fit_memory(height, width, config, memory_budget(config, padded.device), padded.device.type)
        train(net, padded, height, width, config, plan)
    return {name: tensor.detach().cpu() for name, tensor in net.state_dict().items()}


def to_image(estimate: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(1, C, H', W') padded estimate -> (height, width, C) float32 array."""
    return estimate[0, :, :height, :width].permute(1, 2, 0).cpu().numpy()


def denoise(
    noisy: np.ndarray,
    config: S2SConfig,
    on_step: StepCallback | None = None,
    on_pass: PassCallback | None = None,
    initial_state: dict | None = None,
) -> DenoiseResult:
    """Train a Self2Self+ network on `noisy` (H, W, C) in [0, 1], fresh or from `initial_state`
    (a warm start: train_seed's weights), and return its denoised estimate.
    Raises DoesNotFit (before training) when the image cannot fit the memory budget in any plan."""
    height, width, _ = noisy.shape
    net, padded = prepare(noisy, config, initial_state)
    plan = fit_memory(height, width, config, memory_budget(config, padded.device), padded.device.type)
    averages = weight_averages(net, config)
    started = time.perf_counter()
    losses = train(net, padded, height, width, config, plan, on_step, averages=averages)
    trained = time.perf_counter()
    denoised = to_image(
        infer(read_out(net, averages), padded, config, plan.tile, on_pass=on_pass).denoised, height, width
    )
    return DenoiseResult(
        denoised=denoised,
        losses=losses,
        train_seconds=trained - started,
        inference_seconds=time.perf_counter() - trained,
        device=str(padded.device),
        plan=plan,
    )


def denoise_at_steps(
    noisy: np.ndarray, config: S2SConfig, steps: list[int], passes: int, initial_state: dict | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train once up to max(steps) (fresh, or from `initial_state`) and return the `passes`-pass
    (denoised, held-out) estimates (H, W, C) at each of `steps`: the PSNR-vs-steps curve of one
    training, the sweep's fidelity axis; the held-out estimate scores it without a clean image."""
    if config.lr_decay and len(set(steps)) > 1:
        raise ValueError(f"lr_decay {config.lr_decay}: a schedule tied to the final step; read out only there")
    height, width, _ = noisy.shape
    net, padded = prepare(noisy, config, initial_state)
    plan = fit_memory(height, width, config, memory_budget(config, padded.device), padded.device.type)
    averages = weight_averages(net, config)
    estimates = []

    def estimate(step: int) -> None:
        denoised, heldout = infer(read_out(net, averages), padded, config.replace(passes=passes), plan.tile)
        estimates.append((to_image(denoised, height, width), to_image(heldout, height, width)))

    train(
        net,
        padded,
        height,
        width,
        config.replace(steps=max(steps)),
        plan,
        checkpoints=set(steps),
        on_checkpoint=estimate,
        averages=averages,
    )
    return estimates
