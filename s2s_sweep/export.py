"""A finished SIDD run as the SIDD benchmark's submission file.

    python -m s2s_sweep.export RUN_ID --out outputs --data-root /data --to SubmitSrgb.mat

The SIDD sRGB benchmark is scored only by its maintainers, from `SubmitSrgb.mat` uploaded on its
site (https://www.eecs.yorku.ca/~kamel/sidd/benchmark.php). This writes that file from a run's PNGs,
in the layout of the maintainers' own MATLAB code (`DenoiseSrgb.m` and `SIDD_Denoise.m` in their
`Code_v1.1`):

- `DenoisedBlocksSrgb`: a cell array of images x blocks (40 x 32 for the official
  `BenchmarkNoisyBlocksSrgb.mat`), each cell one uint8 H x W x 3 block (256 x 256), in the order of
  the input `.mat` the run denoised (block `b` of image `i` is the run's image `i{i:02d}_b{b:02d}`).
  A cell array because that is what the maintainers' code saves (`cell(nImages, nBlocks)`), so the
  scoring server certainly reads it; `--layout array` writes the one 5-D uint8 array
  (images, blocks, H, W, 3) that many Python scripts write instead. Both index the same way
  (`DenoisedBlocksSrgb{i, b}` in MATLAB, `[i, b]` after `scipy.io.loadmat`).
- `TimeMPSrgb`: seconds per megapixel, as their code computes it: the summed time of every block
  (here: training + inference, from the rows) x 1024 x 1024 / the number of pixels.
- `OptionalData`: a struct of text: MethodName, Authors, PaperTitle, Venue (as in their demo) and
  the run's Settings (its config.yaml), CodeVersion, RunId and Device.

The same command exports a `sidd` (validation) run, in the same layout, for the usual scoring
scripts. A run with blocks missing or failed is refused in one line: a partial submission scores
as a wrong one. The file is MATLAB's v5 format (what SciPy writes; MATLAB's `load` reads it;
the official files are v7.3 only because MATLAB chooses that for large variables).
"""

import argparse
import io
import json
import sys
import time

import numpy as np
import pandas as pd
from PIL import Image

from s2s_sweep.configs import ConfigError
from s2s_sweep.datasets import SIDD_MAT, read_sidd_mat, resolve_data_root, sidd_block_id
from s2s_sweep.errors import EXIT_BAD_INPUT, EXIT_OK, USER_ERRORS
from s2s_sweep.methods import LABELS
from s2s_sweep.results import read_results
from s2s_sweep.store import OutputStore
from s2s_sweep.uris import redact

LAYOUTS = ("cell", "array")
MEGAPIXEL = 1024 * 1024  # the SIDD code's megapixel


def find_run(store: OutputStore, run_id: str) -> tuple[str, dict]:
    """(the run's folder key, its run.json) for a run id anywhere in the store."""
    for key in store.folders():
        record = store.read_text(f"{key}/{run_id}/run.json")
        if record is not None:
            return key, json.loads(record)
    raise ConfigError(f"{run_id}: no run of that id in {store.uri} (expected DATASET/{run_id}/run.json)")


def complete_rows(rows: pd.DataFrame, images: int, blocks: int, run_id: str) -> pd.DataFrame:
    """The run's rows indexed by block id, or ConfigError when any block is missing or failed."""
    wanted = [sidd_block_id(i, b) for i in range(images) for b in range(blocks)]
    done = rows.set_index("image_id")
    failed = sorted(done.index[done["status"] != "ok"])
    if failed:
        raise ConfigError(
            f"run {run_id}: {len(failed)} blocks failed ({', '.join(failed[:5])}{', …' if len(failed) > 5 else ''}); "
            f"rerun them with --resume {run_id} --retry-failed, then export"
        )
    missing = [image_id for image_id in wanted if image_id not in done.index]
    if missing:
        raise ConfigError(
            f"run {run_id}: {len(missing)} of the {len(wanted)} blocks of the input are not in the run "
            f"({', '.join(missing[:5])}{', …' if len(missing) > 5 else ''}); finish it with --resume {run_id}, then "
            "export"
        )
    return done.loc[wanted]


def read_block(store: OutputStore, folder: str, output: str, shape: tuple[int, ...]) -> np.ndarray:
    data = store.read_bytes(f"{folder}/{output}")
    if data is None:
        raise ConfigError(f"{store.path(folder)}/{output}: the block's PNG is missing from the run")
    block = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    if block.shape != shape:
        raise ConfigError(f"{store.path(folder)}/{output}: {block.shape}, expected {shape} as in the input .mat")
    return block


def submission(store: OutputStore, run_id: str, data_root: str | None, layout: str, about: dict) -> dict:
    """The variables of SubmitSrgb.mat for run `run_id` (see the module docstring)."""
    key, record = find_run(store, run_id)
    dataset = record["dataset"]
    if dataset not in SIDD_MAT:
        raise ConfigError(f"run {run_id} is of {dataset}; the SIDD submission needs a run of {' or '.join(SIDD_MAT)}")
    noisy_key = SIDD_MAT[dataset][0]
    source = resolve_data_root(data_root) / "SIDD" / f"{noisy_key}.mat"
    if not source.is_file():
        raise ConfigError(
            f"{source}: not found; the export takes the grid and order of the blocks from the .mat the run "
            "denoised (a run of PNG pairs has no benchmark layout to export)"
        )
    images, blocks, height, width, channels = read_sidd_mat(source, noisy_key).shape
    folder = f"{key}/{run_id}"
    rows = complete_rows(read_results(store, key, run_id).to_pandas(), images, blocks, run_id)

    denoised = np.empty((images, blocks), dtype=object)
    started = time.perf_counter()
    for index, (image_id, row) in enumerate(rows.iterrows()):
        i, b = divmod(index, blocks)
        denoised[i, b] = read_block(store, folder, row["output"], (height, width, channels))
        if (index + 1) % max(1, len(rows) // 10) == 0 or index + 1 == len(rows):
            elapsed = time.perf_counter() - started
            eta = elapsed / (index + 1) * (len(rows) - index - 1)
            print(f"[{index + 1}/{len(rows)} blocks read, ETA {eta:.0f} s]", file=sys.stderr, flush=True)
    if layout == "array":
        denoised = np.stack([np.stack(list(image)) for image in denoised])

    seconds = float((rows["train_seconds"].fillna(0) + rows["inference_seconds"].fillna(0)).sum())
    settings = store.read_text(f"{folder}/config.yaml") or ""
    method = rows["method"].iloc[0]
    optional = {
        "MethodName": about.get("method_name") or LABELS.get(method, method),
        "Authors": about.get("authors") or "",
        "PaperTitle": about.get("paper_title") or "",
        "Venue": about.get("venue") or "",
        "Settings": settings,
        "CodeVersion": ", ".join(sorted(set(rows["code_version"].dropna()))),
        "RunId": run_id,
        "Device": ", ".join(sorted(set(rows["device"].dropna()))),
    }
    return {
        "DenoisedBlocksSrgb": denoised,
        "TimeMPSrgb": seconds * MEGAPIXEL / (images * blocks * height * width),
        "OptionalData": optional,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m s2s_sweep.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="a finished run of sidd-benchmark or sidd")
    parser.add_argument("--out", default="outputs", help="the output store the run wrote to (default %(default)s)")
    parser.add_argument(
        "--data-root", help="where SIDD/*.mat is (default: $S2S_DATA_ROOT, else ~/.cache/s2s-sweep/data)"
    )
    parser.add_argument("--to", default="SubmitSrgb.mat", help="the file to write (default %(default)s)")
    parser.add_argument("--layout", choices=LAYOUTS, default="cell", help="cell (the maintainers' code) or array (5-D)")
    parser.add_argument("--method-name", help="OptionalData.MethodName (default: the run's method)")
    parser.add_argument("--authors", help="OptionalData.Authors")
    parser.add_argument("--paper-title", help="OptionalData.PaperTitle")
    parser.add_argument("--venue", help="OptionalData.Venue")
    args = parser.parse_args(argv)
    try:
        import scipy.io

        about = {name: getattr(args, name) for name in ("method_name", "authors", "paper_title", "venue")}
        variables = submission(OutputStore(args.out), args.run_id, args.data_root, args.layout, about)
        try:
            scipy.io.savemat(args.to, variables, do_compression=True)
        except OSError as error:
            raise ConfigError(f"--to {args.to}: cannot write ({error.strerror or error})") from None
    except USER_ERRORS as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    shape = variables["DenoisedBlocksSrgb"].shape[:2]
    print(
        f"wrote {args.to}: {shape[0]} x {shape[1]} blocks ({args.layout}), "
        f"{variables['TimeMPSrgb']:.2f} s per megapixel, method {variables['OptionalData']['MethodName']}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
