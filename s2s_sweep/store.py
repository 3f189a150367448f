"""The output store: a local folder or any filesystem URI pyarrow understands (s3://, gs://, hdfs://).

Only the driver writes here, so a multi-node cluster needs no shared disk. Every write
goes to a temporary name first and is then renamed (on local disks; object stores put
whole objects), so a crash never leaves a half-written file under its final name.

While a run computes, its writes go through `HeldWrites`: a store that stops answering
(connection refused, 5xx, throttling, expired credentials) does not lose finished images.
They are held in memory and retried with backoff; a store down longer than the patience
ends the run with what is held saved to a local fallback folder in the store's layout,
which the next session of the run (`--resume`) uploads first.
"""

import shutil
import sys
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from model.errors import UserError
from s2s_sweep.uris import adopt_credentials, redact

DEFAULT_FALLBACK = Path.home() / ".cache" / "s2s-sweep" / "fallback"
MAX_RETRY_DELAY = 30.0  # seconds between two tries of a store that is down, at most


class StoreError(UserError, OSError):
    """The output location cannot be used."""


class StoreLost(Exception):
    """The output store failed after work started and did not come back within the patience."""


class OutputStore:
    def __init__(self, uri: str):
        # the working URI, without the credentials adopt_credentials moved out: open the store again from it
        self.location = adopt_credentials(uri, "--out") if "://" in uri else str(Path(uri).expanduser().resolve())
        self.uri = redact(self.location)  # how it is shown and recorded
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(self.location)
        except (ValueError, OSError) as error:  # pyarrow.ArrowInvalid is a ValueError
            raise StoreError(redact(f"--out {self.uri}: not a usable path or filesystem URI ({error})")) from None
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def check_writable(self) -> None:
        """Fail fast, before any training, when the output location cannot be written."""
        probe = f".write-probe-{uuid.uuid4().hex}"
        try:
            self.write_bytes(probe, b"")
            self.fs.delete_file(self.path(probe))
        except OSError as error:
            raise StoreError(redact(f"--out {self.uri}: cannot write there ({error})")) from None

    def write_bytes(self, relative: str, data: bytes) -> None:
        final = self.path(relative)
        folder, name = final.rsplit("/", 1)
        if not isinstance(self.fs, pafs.S3FileSystem):  # S3 has no folders: creating markers costs requests
            self.fs.create_dir(folder, recursive=True)
        # a dot name: readers (pyarrow datasets, DuckDB globs) skip it until it is renamed
        temporary = f"{folder}/.{name}.tmp-{uuid.uuid4().hex[:8]}" if self.local else final
        with self.fs.open_output_stream(temporary) as stream:
            stream.write(data)
        if temporary != final:
            self.fs.move(temporary, final)

    def read_bytes(self, relative: str) -> bytes | None:
        """The file's content, or None when it does not exist."""
        if self.fs.get_file_info(self.path(relative)).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(self.path(relative)) as stream:
            return stream.read()

    def read_text(self, relative: str) -> str | None:
        data = self.read_bytes(relative)
        return None if data is None else data.decode()

    def folders(self, relative: str = "") -> list[str]:
        """Names of the folders directly inside `relative` (prefixes on object storage), sorted."""
        selector = pafs.FileSelector(self.path(relative).rstrip("/"), allow_not_found=True)
        return sorted(
            info.base_name for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.Directory
        )

    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound


def read_file(location: str, what: str) -> bytes:
    """The bytes of one file given by a local path or a filesystem URI (credentials as for --out);
    one line naming `what` when it cannot be read."""
    try:
        if "://" in location:
            fs, path = pafs.FileSystem.from_uri(adopt_credentials(location, what))
        else:
            fs, path = pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except (ValueError, OSError) as error:  # pyarrow.ArrowInvalid is a ValueError
        raise StoreError(redact(f"{what} {location}: cannot read it ({str(error).splitlines()[0]})")) from None


class HeldWrites:
    """The writes of a running job (same `write_bytes` as the store): in order, and held in
    memory with retries while the store is down, so no finished image is lost to an outage."""

    def __init__(self, store: OutputStore, patience_seconds: float, fallback: Path, resume_command: str):
        self.store, self.patience, self.fallback, self.resume_command = (
            store,
            patience_seconds,
            fallback,
            resume_command,
        )
        self.held: dict[str, bytes] = {}  # relative path -> bytes, in the order they were written
        self.down_since: float | None = None
        self.next_try, self.delay = 0.0, 1.0
        self.saved = 0  # files saved to the fallback

    def write_bytes(self, relative: str, data: bytes) -> None:
        self.held[relative] = data
        self.retry()

    def retry(self, wait: bool = False) -> None:
        """Write what is held, unless the backoff says not yet (`wait`: until all is written).
        Raises StoreLost, after saving what is held to the fallback, once the store has been
        down longer than the patience."""
        while self.held:
            now = time.monotonic()
            if now < self.next_try:
                if not wait:
                    return
                time.sleep(self.next_try - now)
                continue
            try:
                self.write_held()
            except OSError as error:
                self.store_down(error)
        if self.down_since is not None:
            print(
                f"output store back after {time.monotonic() - self.down_since:.0f} s: every held file written",
                file=sys.stderr,
                flush=True,
            )
            self.down_since, self.delay = None, 1.0

    def write_held(self) -> None:
        for relative in list(self.held):
            self.store.write_bytes(relative, self.held[relative])
            del self.held[relative]

    def close(self) -> None:
        """At a stop: one last try, then what is still held goes to the fallback."""
        try:
            self.write_held()
        except OSError:
            self.save_to_fallback()

    def store_down(self, error: OSError) -> None:
        now = time.monotonic()
        reason = redact(f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[-1]}")[:300]
        if self.down_since is None:
            self.down_since = now
            print(
                f"warning: output store {self.store.uri} failed ({reason}); finished images are held in memory and "
                f"retried for up to {self.patience:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        elif now - self.down_since > self.patience:
            self.save_to_fallback()
            raise StoreLost(
                f"--out {self.store.uri}: down for {now - self.down_since:.0f} s ({reason}); {self.saved} finished "
                f"files saved in {self.fallback}; "
                f"when the store is back, {self.resume_command} uploads them and computes the rest"
            ) from error
        self.next_try, self.delay = now + self.delay, min(2 * self.delay, MAX_RETRY_DELAY)

    def save_to_fallback(self) -> None:
        for relative, data in self.held.items():
            path = self.fallback / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_bytes(data)
            temporary.replace(path)
        self.saved += len(self.held)
        self.held = {}


def upload_fallback(store: OutputStore, fallback: Path, folder: str) -> int:
    """Write the files an earlier session of `folder` saved in the fallback during an outage into
    the store, then remove them locally; the number uploaded."""
    local = fallback / folder
    files = (
        sorted(path for path in local.rglob("*") if path.is_file() and not path.name.startswith("."))
        if local.is_dir()
        else []
    )
    for path in files:  # sorted: a run's PNGs (images/) before the Parquet parts (results/) that name them
        store.write_bytes(path.relative_to(fallback).as_posix(), path.read_bytes())
    if local.is_dir():
        shutil.rmtree(local)
    return len(files)
