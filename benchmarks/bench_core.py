"""Training-step and inference-pass speed of model/ against a plain reference loop.

The reference is written the way the authors' public code works: separate feature and
gate convolutions, nn.Conv2d reflect padding, F.dropout on the global RNG, one image,
loss.item() every step, sequential inference passes under no_grad, NCHW layout, fp32.
Every variant runs in one process on the same image, `--repeats` times interleaved
(reference, ours fp32, ours bf16, ... then again), so drifts of a shared machine hit all
alike; the table shows medians and the spread (min-max) over repeats. The headline ratios
compare fp32 with fp32; bf16 autocast is a separate row, and so is the IQA term (λ 2e-8,
PaQ-2-PiQ; randomly initialised weight files are generated when --iqa-weights is not given,
which cost what the real ones cost). bf16 rows are timed where the hardware computes bf16
natively (`--precisions auto`; emulated bf16 is slower than fp32 and says nothing of the goals).
"ours NCHW" is ours in the contiguous layout instead of channels_last (the default), fp32.
Last, the paper protocol (4000 steps with the IQA term + 500 passes) projected per image from
the medians, and where the speed goals stand.

    python benchmarks/bench_core.py                             # 128² and 256² on this machine
    python benchmarks/bench_core.py --device cuda --sizes 256x256,512x512 --steps 20 --passes 100
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import PAPER_LAMBDA_IQA, PAPER_PASSES, PAPER_STEPS  # this folder is on the path of a script run from it
from torch import nn

from model.config import S2SConfig, native_bf16
from model.denoiser import build_network, infer, resolve_device, train
from model.iqa_weights import write_random_iqa_weights
from model.memory import estimate

# ratio to the reference at 256² (issue 10): training fp32, training bf16, inference fp32, inference bf16
GOALS = {("train", "fp32"): 1.8, ("train", "bf16"): 3.5, ("infer", "fp32"): 2.5, ("infer", "bf16"): 4.0}


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
                    nn.Sequential(
                        nn.Conv2d((48 if i == 0 else 96) + 48, 96, 3, 1, 1, padding_mode="reflect"), nn.LeakyReLU(0.2)
                    ),
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


def timed(fn, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def variants(height, width, steps, passes, device, config, precisions):
    """(phase, name, precision, iqa, run) per variant; run() does `steps` steps or `passes` passes, warmed up."""
    noisy = torch.rand(1, 3, height, width, device=device)
    reference = ReferenceNet(3, config.p).to(device)
    whole = estimate(height, width, config, crop=0, batch=1, tile=0, device_type=device.type)  # the paper's whole image
    found = [
        ("train", "reference", "fp32", False, lambda: reference_train_steps(reference, noisy, steps)),
        ("infer", "reference", "fp32", False, lambda: reference_infer(reference, noisy, passes)),
    ]
    for precision in precisions:
        for iqa in (False, True):
            step_config = config.replace(
                precision=precision, steps=steps, log_every=steps, lambda_iqa=PAPER_LAMBDA_IQA if iqa else 0.0
            )
            net = build_network(3, step_config, device)
            found.append(
                ("train", "ours", precision, iqa, lambda n=net, c=step_config: train(n, noisy, height, width, c, whole))
            )
        infer_config = config.replace(precision=precision, passes=passes)
        found.append(("infer", "ours", precision, False, lambda n=net, c=infer_config: infer(n, noisy, c)))
    # the memory layout: ours keeps channels_last (the default); the same in NCHW, fp32, without the IQA term
    nchw = config.replace(precision="fp32", channels_last=False)
    step_config, infer_config = nchw.replace(steps=steps, log_every=steps, lambda_iqa=0.0), nchw.replace(passes=passes)
    net = build_network(3, nchw, device)
    found.append(
        ("train", "ours NCHW", "fp32", False, lambda n=net, c=step_config: train(n, noisy, height, width, c, whole))
    )
    found.append(("infer", "ours NCHW", "fp32", False, lambda n=net, c=infer_config: infer(n, noisy, c)))
    for *_, run in found:  # warm-up: allocator, cuDNN/oneDNN kernel choice, IQA model load
        run()
    return found


def bench_size(height, width, steps, passes, repeats, device, config, precisions):
    found = variants(height, width, steps, passes, device, config, precisions)
    seconds = {index: [] for index in range(len(found))}
    for _ in range(repeats):
        for index, (*_, run) in enumerate(found):
            seconds[index].append(timed(run, device))
    reference = {phase: seconds[index] for index, (phase, name, *_) in enumerate(found) if name == "reference"}
    rows = []
    for index, (phase, name, precision, iqa, _) in enumerate(found):
        per = steps if phase == "train" else passes
        each = [s / per for s in seconds[index]]
        ratios = sorted(
            r / s for r, s in zip(reference[phase], seconds[index], strict=True)
        )  # per repeat: interleaved pairs
        rows.append(
            {
                "size": f"{height}x{width}",
                "phase": phase,
                "variant": name,
                "precision": precision,
                "iqa": iqa,
                "per": "step" if phase == "train" else "pass",
                "count": per,
                "median_s": statistics.median(each),
                "min_s": min(each),
                "max_s": max(each),
                "speedup_median": statistics.median(ratios),
                "speedup_min": ratios[0],
                "speedup_max": ratios[-1],
            }
        )
    return rows


def paper_projection(rows):
    """Seconds per image under the paper protocol from the medians: 4000 steps with the IQA term + 500 passes."""
    projections = []
    for size in dict.fromkeys(row["size"] for row in rows):
        for precision in dict.fromkeys(r["precision"] for r in rows if r["size"] == size and r["variant"] == "ours"):
            ours = {
                (r["phase"], r["iqa"]): r["median_s"]
                for r in rows
                if r["size"] == size and r["variant"] == "ours" and r["precision"] == precision
            }
            train_s, infer_s = PAPER_STEPS * ours[("train", True)], PAPER_PASSES * ours[("infer", False)]
            projections.append(
                {
                    "size": size,
                    "precision": precision,
                    "train_s": train_s,
                    "infer_s": infer_s,
                    "image_s": train_s + infer_s,
                    "iqa_share_of_step": 1 - ours[("train", False)] / ours[("train", True)],
                }
            )
    return projections


def goal_status(rows):
    """The speed goals at 256² (median ratios to the reference, without the IQA term, which it does not have)."""
    status = []
    for (phase, precision), goal in GOALS.items():
        row = next(
            (
                r
                for r in rows
                if r["size"] == "256x256"
                and r["variant"] == "ours"
                and r["phase"] == phase
                and r["precision"] == precision
                and not r["iqa"]
            ),
            None,
        )
        if row:
            status.append(
                {
                    "phase": phase,
                    "precision": precision,
                    "goal": goal,
                    "measured": row["speedup_median"],
                    "met": row["speedup_median"] >= goal,
                }
            )
    return status


def print_tables(rows, projections, status):
    print(
        f"{'size':>9} {'phase':>5} {'variant':>9} {'prec':>4} {'iqa':>3} {'per':>4} {'median s':>9} {'min-max s':>15} "
        f"{'x ref':>6} {'x min-max':>11}"
    )
    for r in rows:
        print(
            f"{r['size']:>9} {r['phase']:>5} {r['variant']:>9} {r['precision']:>4} {'yes' if r['iqa'] else '':>3} "
            f"{r['per']:>4}"
            f" {r['median_s']:9.4f} {r['min_s']:7.4f}-{r['max_s']:<7.4f} {r['speedup_median']:6.2f} "
            f"{r['speedup_min']:5.2f}-{r['speedup_max']:<5.2f}"
        )
    print(
        f"\npaper protocol per image ({PAPER_STEPS} steps with λ_IQA {PAPER_LAMBDA_IQA:g} + {PAPER_PASSES} passes), "
        "projected from the medians:"
    )
    for p in projections:
        print(
            f"{p['size']:>9} {p['precision']}: train {p['train_s']:8.0f} s + inference {p['infer_s']:6.0f} s = "
            f"{p['image_s'] / 60:6.1f} min; IQA term {p['iqa_share_of_step']:.0%} of a step"
        )
    print("\nspeed goals at 256x256 (x the reference):")
    for g in status:
        print(
            f"  {g['phase']:>5} {g['precision']}: goal {g['goal']:.1f}x, measured {g['measured']:.2f}x — "
            f"{'met' if g['met'] else 'not met'}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128x128,256x256")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per variant and repeat")
    parser.add_argument("--passes", type=int, default=8, help="timed inference passes per variant and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile our network")
    parser.add_argument(
        "--iqa-weights", help="TORCH_HOME-style folder with the IQA weights (default: random ones, generated)"
    )
    parser.add_argument(
        "--precisions",
        default="auto",
        help="fp32, bf16 or both, comma-separated; auto: fp32, and bf16 where the hardware has it natively (emulated "
        "bf16 is slower than fp32 and its timings would measure the emulation)",
    )
    parser.add_argument("--json", default="benchmarks/results/bench_core.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    precisions = args.precisions.split(",") if args.precisions != "auto" else ["fp32"]
    if args.precisions == "auto" and native_bf16(device.type):
        precisions.append("bf16")
    with tempfile.TemporaryDirectory() as generated:
        if not args.iqa_weights:
            write_random_iqa_weights(Path(generated))
        config = S2SConfig(device=str(device), compile=args.compile, iqa_weights=args.iqa_weights or generated)
        rows = []
        for size in args.sizes.split(","):
            height, width = map(int, size.split("x"))
            rows += bench_size(height, width, args.steps, args.passes, args.repeats, device, config, precisions)
            print(f"{size} done", flush=True)
    projections, status = paper_projection(rows), goal_status(rows)
    print_tables(rows, projections, status)
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "native_bf16": native_bf16(device.type),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "compile": args.compile,
        "repeats": args.repeats,
        "precisions": precisions,
        "command": "python benchmarks/bench_core.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False) and k != "json"
        ),
        "rows": rows,
        "paper_projection": projections,
        "goals": status,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
