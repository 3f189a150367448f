"""Get and check the benchmark files.

    python -m s2s_sweep.data fetch cbsd68-25 [--data-root DIR] [--source URL]
    python -m s2s_sweep.data verify polyu [--data-root DIR]

`fetch` downloads every file of a dataset with pooch from its public source (or from
`--source`: http(s), ftp, or file:///mnt/mirror, laid out like a data root), checks it against
the SHA-256 sums kept in this package (checksums/SHA256SUMS), retries failures with backoff,
and keeps only good files.
`verify` checks the files already under the data root. SIDD has no public direct URL:
both commands explain the manual step.
"""

import argparse
import shutil
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pooch

from s2s_sweep.datasets import CBSD68_SIGMAS, SIDD_MAT, DatasetError, resolve_data_root

CHECKSUMS = Path(__file__).with_name("checksums") / "SHA256SUMS"
CBSD68_SOURCE = "https://raw.githubusercontent.com/clausmichele/CBSD68-dataset/master/"  # holds CBSD68/...
POLYU_SOURCE = (
    "https://raw.githubusercontent.com/csjunxu/PolyU-Real-World-Noisy-Images-Dataset/master/"  # holds CroppedImages/...
)


def dataset_files(name: str) -> dict[str, str]:
    """{path relative to the data root: sha256} of every file of `name`."""
    if name.startswith("cbsd68-") and name.removeprefix("cbsd68-") in map(str, CBSD68_SIGMAS):
        prefixes = (f"CBSD68/noisy{name.removeprefix('cbsd68-')}/", "CBSD68/original_png/")
    elif name == "polyu":
        prefixes = ("PolyU/CroppedImages/",)
    elif name in SIDD_MAT:
        raise DatasetError(
            f"{name}: SIDD is distributed only from its own site, with no direct download; fetch "
            f"{' and '.join(k + '.mat' for k in SIDD_MAT[name] if k)} there by hand and put them in DATA_ROOT/SIDD/"
        )
    else:
        raise DatasetError(
            f"{name}: no downloadable files; known: {', '.join(f'cbsd68-{s}' for s in CBSD68_SIGMAS)}, polyu"
        )
    files = {}
    for line in CHECKSUMS.read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        path = path.removeprefix("./")
        if path.startswith(prefixes):
            files[path] = digest
    return files


def remote_url(relative: str, source: str | None) -> str:
    """Where a file lives: under `source` with the data-root layout, else in its public repository."""
    if source:
        return source.rstrip("/") + "/" + relative
    if relative.startswith("PolyU/"):
        return POLYU_SOURCE + relative.removeprefix("PolyU/")
    return CBSD68_SOURCE + relative


def verify(name: str, data_root: Path) -> list[str]:
    """Problems with the files of `name` under `data_root`, one line each (empty when all good)."""
    problems = []
    for relative, digest in dataset_files(name).items():
        path = data_root / relative
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif pooch.file_hash(str(path)) != digest:
            problems.append(f"{path}: SHA-256 mismatch (corrupt or a different version)")
    return problems


def copy_file_url(url: str, output_file: str, registry: pooch.Pooch, check_only: bool = False) -> bool | None:
    """A pooch downloader for file:// URLs (a local or mounted mirror), which pooch leaves out."""
    path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if check_only:
        return path.is_file()
    shutil.copyfile(path, output_file)
    return None


def fetch(name: str, data_root: Path, source: str | None = None, retries: int = 3) -> list[str]:
    """Download the missing or bad files of `name` (each checked against its SHA-256, retried
    `retries` times with pooch's backoff); returns the problems left (empty when all good)."""
    files = dataset_files(name)
    urls = {relative: remote_url(relative, source) for relative in files}
    registry = pooch.create(
        data_root,
        base_url="",
        registry={relative: f"sha256:{digest}" for relative, digest in files.items()},
        urls=urls,
        retry_if_failed=retries,
    )
    pooch.get_logger().setLevel("WARNING")  # one progress line below instead of a line per file
    problems = []
    for done, relative in enumerate(files, 1):
        url = urls[relative]
        try:
            registry.fetch(relative, downloader=copy_file_url if url.startswith("file:") else None)
        except ValueError:  # pooch: the hash does not match; the download is not kept
            problems.append(f"{url}: SHA-256 mismatch, file not kept")
        except OSError as error:  # unreachable, missing (requests' errors are OSErrors too)
            problems.append(f"{url}: download failed ({error})")
        print(f"\r{name}: {done}/{len(files)} files", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2s_sweep.data", description="Get and check benchmark files.")
    parser.add_argument("command", choices=["fetch", "verify"])
    parser.add_argument("name", help="cbsd68-15, cbsd68-25, cbsd68-50, polyu (sidd: manual download)")
    parser.add_argument("--data-root", help="default: $S2S_DATA_ROOT, else ~/.cache/s2s-sweep/data")
    parser.add_argument(
        "--source", help="fetch from this URL (laid out like a data root) instead of the public repositories"
    )
    args = parser.parse_args(argv)
    data_root = resolve_data_root(args.data_root)
    try:
        problems = fetch(args.name, data_root, args.source) if args.command == "fetch" else verify(args.name, data_root)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in problems[:10]:
        print(problem, file=sys.stderr)
    if problems:
        print(
            f"error: {args.name}: {len(problems)} of {len(dataset_files(args.name))} files are not good",
            file=sys.stderr,
        )
        return 1
    print(f"{args.name}: all {len(dataset_files(args.name))} files present and verified under {data_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
