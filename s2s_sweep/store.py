"""The output store: a local folder or any filesystem URI pyarrow understands (s3://, gs://, hdfs://).

Only the driver writes here, so a multi-node cluster needs no shared disk. Every write
goes to a temporary name first and is then renamed (on local disks; object stores put
whole objects), so a crash never leaves a half-written file under its final name.
"""

import uuid
from pathlib import Path

import pyarrow.fs as pafs


class StoreError(OSError):
    """The output location cannot be used."""


class OutputStore:
    def __init__(self, uri: str):
        location = uri if "://" in uri else str(Path(uri).expanduser().resolve())
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(location)
        except (pafs.ArrowInvalid, ValueError, OSError) as error:
            raise StoreError(f"--out {uri}: not a usable path or filesystem URI ({error})") from None
        self.uri = uri
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
            raise StoreError(f"--out {self.uri}: cannot write there ({error})") from None

    def write_bytes(self, relative: str, data: bytes) -> None:
        final = self.path(relative)
        folder, name = final.rsplit("/", 1)
        self.fs.create_dir(folder, recursive=True)
        # a dot name: readers (pyarrow datasets, DuckDB globs) skip it until it is renamed
        temporary = f"{folder}/.{name}.tmp-{uuid.uuid4().hex[:8]}" if self.local else final
        with self.fs.open_output_stream(temporary) as stream:
            stream.write(data)
        if temporary != final:
            self.fs.move(temporary, final)

    def read_text(self, relative: str) -> str | None:
        """The file's text, or None when it does not exist."""
        if self.fs.get_file_info(self.path(relative)).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(self.path(relative)) as stream:
            return stream.read().decode()

    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

