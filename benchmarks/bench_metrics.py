"""Memory and time of the metrics on large images: PSNR, SSIM per channel, SSIM with a 3-D window.

Each (metric, size) runs in a fresh Python process that imports s2s_sweep.metrics, makes a random
8-bit RGB pair of the size (megapixels, 4:3), and scores it once: the peak RSS over the process's
peak just before scoring is the metric's own memory (Linux ru_maxrss), timed with perf_counter.
The runner scores every image twice per SSIM (denoised and noisy against the clean), one at a time,
so a worker needs the larger of these on top of the image itself.

    python benchmarks/bench_metrics.py [--sizes 1 4 12]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

METRICS = ("calculate_psnr", "calculate_ssim", "calculate_ssim_3d")
PROBE = """
import json, resource, sys, time
import numpy as np
from s2s_sweep import metrics
name, megapixels = sys.argv[1], float(sys.argv[2])
height = int(round((megapixels * 1e6 * 3 / 4) ** 0.5)); width = int(round(height * 4 / 3))
rng = np.random.default_rng(0)
clean = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
denoised = np.clip(clean.astype(np.int16) + rng.integers(-20, 21, clean.shape), 0, 255).astype(np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
value = getattr(metrics, name)(denoised, clean)
seconds = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"metric": name, "megapixels": megapixels, "height": height, "width": width,
                  "peak_over_image_mb": (after - before) / 1024, "seconds": seconds, "value": float(value)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 12], help="megapixels")
    parser.add_argument("--json", default="benchmarks/results/bench_metrics.json")
    args = parser.parse_args()
    rows = []
    print(f"{'metric':<20} {'MP':>5} {'size':>11} {'+MB':>8} {'s':>7}")
    for megapixels in args.sizes:
        for name in METRICS:
            done = subprocess.run(
                [sys.executable, "-c", PROBE, name, str(megapixels)], capture_output=True, text=True, check=True
            )
            row = json.loads(done.stdout)
            rows.append(row)
            size = f"{row['height']}x{row['width']}"
            print(f"{name:<20} {megapixels:5g} {size:>11} {row['peak_over_image_mb']:8.0f} {row['seconds']:7.2f}")
    Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
