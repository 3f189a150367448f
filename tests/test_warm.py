"""Warm starts: a seed network trained once per run, every image starting from it."""

import hashlib

import mlflow
import numpy as np
import pytest
import torch
from conftest import run_in_process
from PIL import Image

from model.config import S2SConfig
from model.denoiser import SeedMismatch, denoise, prepare, train_seed
from s2s_sweep.configs import ConfigError
from s2s_sweep.datasets import open_dataset
from s2s_sweep.methods import Method, denoise_image, load_seed
from s2s_sweep.run_settings import RunSettings
from s2s_sweep.runner import RunOptions, run_dataset

TINY = S2SConfig(steps=6, passes=2, lambda_iqa=0.0)


def image(seed: int, shape=(48, 48, 3)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_a_warm_image_starts_from_the_seed_weights_and_trains_warm_steps():
    seed = train_seed([image(0)], TINY)
    net, _ = prepare(image(1), TINY, seed)
    assert all(torch.equal(net.state_dict()[name], tensor) for name, tensor in seed.items())  # equal at load
    fresh, _ = prepare(image(1), TINY)
    assert not torch.equal(fresh.state_dict()["head.weight"], seed["head.weight"])
    assert train_seed([image(0)], TINY)["head.weight"].equal(seed["head.weight"])  # reproducible
    assert (
        RunSettings().image_steps(TINY.steps) == 6
        and RunSettings(init="warm").image_steps(TINY.steps) == 3
        and RunSettings(init="warm", warm_steps=4).image_steps(TINY.steps) == 4
    )
    warm = denoise(image(1), TINY.replace(steps=3), initial_state=seed)
    cold = denoise(image(1), TINY.replace(steps=3))
    assert not np.array_equal(warm.denoised, cold.denoised)


def test_a_seed_of_another_channel_count_is_a_one_line_error():
    seed = train_seed([image(0)], TINY.replace(steps=1))
    with pytest.raises(SeedMismatch, match="3-channel images; this image has 1 channels"):
        denoise(image(1, (48, 48, 1)), TINY, initial_state=seed)


@pytest.mark.slow
def test_a_warm_run_trains_its_seed_once_every_image_starts_from_it_and_a_resume_reuses_it(local_ray, tmp_path, capsys):
    warm = Method(config=TINY, run=RunSettings(init="warm", warm_steps=2))
    demo = open_dataset("demo")
    options = RunOptions(out=str(tmp_path), run_id="w", flush_seconds=0)
    first = run_dataset(demo.select(limit=2), warm, options).table.to_pandas()
    printed = capsys.readouterr().out
    assert printed.count("seed: training on astronaut, 6 steps each") == 1
    seed_file = tmp_path / "demo" / "w" / "seed.pt"
    data = seed_file.read_bytes()
    assert set(first["init"]) == {"warm"} and set(first["steps"]) == {2}
    assert set(first["init_source"]) == {"run w seed.pt, 6 steps on astronaut"}
    # the task started from the saved seed: the same image from that seed, outside Ray, gives the same row
    noisy, clean = demo.load("chelsea")
    again = denoise_image("chelsea", noisy, clean, warm, 25.0, 1, load_seed(data, "seed.pt"))
    assert again["psnr"] == first.set_index("image_id").loc["chelsea", "psnr"]
    experiment = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("s2s-sweep/demo")
    (run,) = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs([experiment.experiment_id])
    assert "seed.pt" in {
        a.path for a in mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(run.info.run_id)
    }

    resumed = run_dataset(demo.select(limit=3), warm, options).table.to_pandas()  # one more image, same run
    assert "seed: reusing this run's seed.pt" in capsys.readouterr().out
    assert seed_file.read_bytes() == data and len(resumed) == 3 and set(resumed["init"]) == {"warm"}

    from_file = run_dataset(
        demo.select(limit=1),
        Method(config=TINY, run=RunSettings(init=str(seed_file))),
        RunOptions(out=str(tmp_path), run_id="f", flush_seconds=0),
    ).table
    assert from_file["init"].to_pylist() == ["file"]
    assert from_file["init_source"].to_pylist() == [f"{seed_file} sha256:{hashlib.sha256(data).hexdigest()[:12]}"]
    assert not (tmp_path / "demo" / "f" / "seed.pt").exists()


def test_a_seed_image_the_network_cannot_take_is_a_one_line_error_before_any_training(local_ray, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(
        folder / "a_small.png"
    )  # first in listing order: the seed's image
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "b.png")
    with pytest.raises(
        ConfigError,
        match=r"^init: warm: seed image a_small \(the seed trains on the dataset's first 1\): "
        r".*20x20 pixels is too small.*init: PATH\)$",
    ):
        run_dataset(
            open_dataset(f"folder:{folder}"),
            Method(config=TINY, run=RunSettings(init="warm")),
            RunOptions(out=str(tmp_path / "out"), run_id="s", flush_seconds=0),
        )
    assert not list((tmp_path / "out").rglob("seed.pt"))


@pytest.mark.slow
def test_denoise_cli_starts_from_a_saved_seed_and_refuses_a_file_that_is_not_one(tmp_path):
    seed_file = tmp_path / "seed.pt"
    torch.save(train_seed([image(0)], TINY.replace(steps=1)), seed_file)
    done = run_in_process(
        "s2s_sweep.denoise",
        "--demo",
        "-o",
        str(tmp_path / "out.png"),
        "--init",
        str(seed_file),
        "--steps",
        "4",
        "--passes",
        "2",
        "--lambda-iqa",
        "0",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out.png").is_file()
    (tmp_path / "bad.pt").write_bytes(b"not a network")
    done = run_in_process(
        "s2s_sweep.denoise",
        "--demo",
        "-o",
        str(tmp_path / "out.png"),
        "--init",
        str(tmp_path / "bad.pt"),
        "--steps",
        "4",
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(
        f"error: init: {tmp_path / 'bad.pt'}: not a saved Self2Self+ seed network"
    )
    done = run_in_process(
        "s2s_sweep.denoise", "--demo", "-o", str(tmp_path / "out.png"), "--init", str(tmp_path / "missing.pt")
    )
    assert done.returncode == 2 and "--init" in done.stderr and "missing.pt: cannot read it" in done.stderr
