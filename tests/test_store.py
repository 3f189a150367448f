"""The output store's held writes on a real local filesystem: an outage shorter than the
patience loses nothing and keeps the order; a longer one saves what is held to the fallback,
which the next session uploads."""

from pathlib import Path

import pytest

from s2s_sweep.store import HeldWrites, OutputStore, StoreLost, upload_fallback


def block(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "demo").write_text("a file where the run's folder should be: every write below it fails")


def test_an_outage_shorter_than_the_patience_holds_the_writes_and_writes_them_in_order(tmp_path, capsys):
    store = OutputStore(str(tmp_path / "out"))
    writes = HeldWrites(store, patience_seconds=60, fallback=tmp_path / "fallback", resume_command="--resume R")
    block(tmp_path / "out")
    writes.write_bytes("demo/R/images/a.png", b"a")
    writes.write_bytes("demo/R/results/part-1.parquet", b"rows naming a")
    assert list(writes.held) == ["demo/R/images/a.png", "demo/R/results/part-1.parquet"]
    assert "retried for up to 60 s" in capsys.readouterr().err
    (tmp_path / "out" / "demo").unlink()  # the store is back
    writes.retry(wait=True)
    assert not writes.held and writes.saved == 0
    assert (tmp_path / "out/demo/R/images/a.png").read_bytes() == b"a"
    assert (tmp_path / "out/demo/R/results/part-1.parquet").read_bytes() == b"rows naming a"
    assert "output store back" in capsys.readouterr().err


def test_an_outage_past_the_patience_saves_what_is_held_and_a_resume_uploads_it(tmp_path):
    store, fallback = OutputStore(str(tmp_path / "out")), tmp_path / "fallback"
    writes = HeldWrites(store, patience_seconds=0, fallback=fallback, resume_command="--resume R")
    block(tmp_path / "out")
    writes.write_bytes("demo/R/images/a.png", b"a")
    with pytest.raises(
        StoreLost, match=r"1 finished files saved in .*fallback; when the store is back, --resume R uploads them"
    ):
        writes.retry(wait=True)
    assert (fallback / "demo/R/images/a.png").read_bytes() == b"a" and not writes.held
    (tmp_path / "out" / "demo").unlink()
    assert upload_fallback(store, fallback, "demo/R") == 1
    assert (tmp_path / "out/demo/R/images/a.png").read_bytes() == b"a"
    assert not (fallback / "demo/R").exists() and upload_fallback(store, fallback, "demo/R") == 0


def test_a_stop_saves_what_the_store_did_not_take(tmp_path):
    store, fallback = OutputStore(str(tmp_path / "out")), tmp_path / "fallback"
    writes = HeldWrites(store, patience_seconds=60, fallback=fallback, resume_command="--resume R")
    block(tmp_path / "out")
    writes.write_bytes("demo/R/images/a.png", b"a")
    writes.close()
    assert writes.saved == 1 and (fallback / "demo/R/images/a.png").exists()
