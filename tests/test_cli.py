import numpy as np
import pytest
from conftest import NO_DOWNLOADS, run_in_process, run_module
from PIL import Image

from s2s_sweep.images import to_uint8

FAST = ["--steps", "4", "--passes", "3", "--lambda-iqa", "0"]


def write_pair(tmp_path, astronaut_pair):
    noisy, clean = astronaut_pair
    Image.fromarray(to_uint8(noisy)).save(tmp_path / "noisy.png")
    Image.fromarray(to_uint8(clean)).save(tmp_path / "clean.png")


def test_denoise_cli_end_to_end_with_metrics(tmp_path, astronaut_pair):
    write_pair(tmp_path, astronaut_pair)
    out = tmp_path / "out" / "denoised.png"
    done = run_module(
        "s2s_sweep.denoise", str(tmp_path / "noisy.png"), "-o", str(out), "--clean", str(tmp_path / "clean.png"), *FAST
    )
    assert done.returncode == 0, done.stderr
    saved = Image.open(out)
    assert saved.mode == "RGB" and saved.size == (96, 96)
    assert "noisy   PSNR" in done.stdout and "S2S+    PSNR" in done.stdout
    assert "train: 100%" in done.stderr and "4/4" in done.stderr  # progress bar with ETA


@pytest.mark.slow
def test_denoise_cli_with_the_iqa_loss_and_local_weights(tmp_path, astronaut_pair, iqa_weights_dir):
    write_pair(tmp_path, astronaut_pair)
    args = ["--steps", "2", "--passes", "2", "--lambda-iqa", "2e-8", "--iqa-weights", iqa_weights_dir]
    done = run_in_process("s2s_sweep.denoise", str(tmp_path / "noisy.png"), "-o", str(tmp_path / "o.png"), *args)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_denoise_cli_demo_needs_no_files(tmp_path):
    done = run_in_process("s2s_sweep.denoise", "--demo", "-o", str(tmp_path / "demo.png"), *FAST)
    assert done.returncode == 0, done.stderr
    assert np.asarray(Image.open(tmp_path / "demo.png")).shape == (64, 64, 3)
    assert "S2S+    PSNR" in done.stdout


def one_line_error(done) -> str:
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr
    return lines[-1]


def test_bad_inputs_give_one_line_errors(tmp_path, astronaut_pair):
    write_pair(tmp_path, astronaut_pair)
    noisy, out = str(tmp_path / "noisy.png"), str(tmp_path / "o.png")

    def error(*args: str) -> str:
        return one_line_error(run_in_process("s2s_sweep.denoise", *args, "-o", out))

    assert "missing.png: no such image file" in error(str(tmp_path / "missing.png"))
    assert "p: expected a probability" in error(noisy, "--p", "1.5")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "other.png")
    assert "other.png: shape (50, 50, 3) differs" in error(noisy, "--clean", str(tmp_path / "other.png"), *FAST)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "tiny.png")
    assert "too small" in error(str(tmp_path / "tiny.png"), *FAST)


@pytest.mark.slow
def test_missing_iqa_weights_stop_before_training(tmp_path, astronaut_pair):
    write_pair(tmp_path, astronaut_pair)
    done = run_module(
        "s2s_sweep.denoise",
        str(tmp_path / "noisy.png"),
        "-o",
        str(tmp_path / "o.png"),
        "--steps",
        "4",
        "--passes",
        "2",
        env={"TORCH_HOME": str(tmp_path / "empty_torch_home"), **NO_DOWNLOADS},
    )
    error = one_line_error(done)
    assert "IQA weights missing" in error and "--lambda-iqa 0" in error
    assert "train:   0%" in done.stderr and not (tmp_path / "o.png").exists()


def test_an_internal_error_in_denoise_keeps_its_traceback_and_exits_70(tmp_path, monkeypatch):
    import s2s_sweep.denoise as cli

    monkeypatch.setattr(cli, "denoise", lambda *a: {}["bug"])
    done = run_in_process("s2s_sweep.denoise", "--demo", "-o", str(tmp_path / "o.png"))
    assert done.returncode == 70 and all(
        text in done.stderr for text in ("Traceback", "KeyError: 'bug'", "internal error")
    )
