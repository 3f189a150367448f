"""Training-step and inference speed of model/ against a plain reference loop.

The reference is written the way the authors' public code works: separate feature and
gate convolutions, nn.Conv2d reflect padding, F.dropout on the global RNG, one image,
loss.item() every step, sequential inference passes under no_grad, NCHW layout. Same
image, same network and math, both run side by side in one process, so the figures are
ratios on one machine.

    python benchmarks/bench_core.py                      # 128², 256², 320x480 on this machine
    python benchmarks/bench_core.py --sizes 128x128 --steps 5 --passes 10 --json out.json
"""

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from model.config import S2SConfig
from model.denoiser import build_network, infer, resolve_device, train
from model.memory import estimate


class ReferenceGatedConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, padding_mode="reflect"), nn.LeakyReLU(0.2))
        self.gate = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, padding_mode="reflect"), nn.Sigmoid())

    def forward(self, x):
        return self.conv(x) * self.gate(x)


class ReferenceNet(nn.Module):
    """The authors' autoencoder structure: mask drawn inside forward, dropout via F.dropout."""

    def __init__(self, channels, p):
        super().__init__()
        self.p = p
        self.encoder = nn.ModuleList([nn.Sequential(ReferenceGatedConv(2 * channels, 48), ReferenceGatedConv(48, 48))])
        self.encoder.extend(ReferenceGatedConv(48, 48) for _ in range(5))
        self.decoder = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.Sequential(nn.Conv2d((48 if i == 0 else 96) + 48, 96, 3, 1, 1, padding_mode="reflect"), nn.LeakyReLU(0.2)),
                    nn.Sequential(nn.Conv2d(96, 96, 3, 1, 1, padding_mode="reflect"), nn.LeakyReLU(0.2)),
                ]
            )
            for i in range(5)
        )
        self.head = nn.Conv2d(96, channels, 3, 1, 1, padding_mode="reflect")

    def forward(self, noisy):
        mask = F.dropout(torch.ones_like(noisy), self.p, True) * (1 - self.p)
        skips = [self.encoder[0](torch.cat([mask, mask * noisy], 1))]
        for block in self.encoder[1:]:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for first, second in self.decoder:
            h = torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skips.pop()], 1)
            h = first(F.dropout(h, self.p, training=True))
            h = second(F.dropout(h, self.p, training=True))
        return mask, self.head(h)


def reference_train_steps(net, noisy, steps):
    optimizer = torch.optim.Adam(net.parameters(), lr=4e-4, betas=(0.9, 0.999))
    for _ in range(steps):
        optimizer.zero_grad()
        mask, output = net(noisy)
        loss = torch.abs((output - noisy) * (1 - mask)).sum() / (1 - mask).sum()
        loss.item()  # the reference reads the loss every step for its progress bar
        loss.backward()
        optimizer.step()


def reference_infer(net, noisy, passes):
    with torch.no_grad():
        total = 0
        for _ in range(passes):
            total += net(noisy)[1]
    return (total / passes).clamp(0, 1)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def bench_size(height, width, steps, passes, device, config):
    noisy = torch.rand(1, 3, height, width, device=device)
    reference = ReferenceNet(3, config.p).to(device)
    ours = build_network(3, config, device)
    step_config = config.replace(steps=steps, log_every=max(steps, 1))
    infer_config = config.replace(passes=passes)
    whole = estimate(height, width, config, crop=0, batch=1, tile=0, device_type=device.type)  # the paper's whole image
    # warm-up: allocator, cuDNN/oneDNN kernel choice, compile
    reference_train_steps(reference, noisy, 2)
    train(ours, noisy, height, width, config.replace(steps=2, log_every=2), whole)
    row = {"size": f"{height}x{width}", "steps": steps, "passes": passes}
    row["ref_step_s"] = timed(lambda: reference_train_steps(reference, noisy, steps), device) / steps
    row["ours_step_s"] = timed(lambda: train(ours, noisy, height, width, step_config, whole), device) / steps
    row["ref_infer_s"] = timed(lambda: reference_infer(reference, noisy, passes), device)
    row["ours_infer_s"] = timed(lambda: infer(ours, noisy, infer_config), device)
    row["train_speedup"] = row["ref_step_s"] / row["ours_step_s"]
    row["infer_speedup"] = row["ref_infer_s"] / row["ours_infer_s"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128x128,256x256,320x480")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per size")
    parser.add_argument("--passes", type=int, default=500, help="inference passes per size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", default="benchmarks/results/bench_core.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    config = S2SConfig(lambda_iqa=0.0, device=str(device), precision=args.precision, compile=args.compile)
    rows = []
    print(f"{'size':>9} {'ref step':>9} {'ours step':>9} {'x':>5} {'ref infer':>10} {'ours infer':>10} {'x':>5}")
    for size in args.sizes.split(","):
        height, width = map(int, size.split("x"))
        row = bench_size(height, width, args.steps, args.passes, device, config)
        rows.append(row)
        print(
            f"{row['size']:>9} {row['ref_step_s']:9.3f} {row['ours_step_s']:9.3f} {row['train_speedup']:5.2f}"
            f" {row['ref_infer_s']:10.2f} {row['ours_infer_s']:10.2f} {row['infer_speedup']:5.2f}",
            flush=True,
        )
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": args.precision,
        "compile": args.compile,
        "rows": rows,
    }
    from pathlib import Path

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
