"""The baselines behind the runner's one task signature: real CBM3D, NL-means and wavelet denoising."""

import importlib.util
import json

import pytest

from model.config import S2SConfig
from s2s_sweep.configs import ConfigError
from s2s_sweep.methods import REGISTRY, Method, denoise_image, estimate_noise_sigma
from s2s_sweep.methods.base import ClassicBaseline
from s2s_sweep.run import main
from s2s_sweep.run_settings import RunSettings

CLASSIC = [name for name, method in REGISTRY.items() if isinstance(method, ClassicBaseline)]


@pytest.mark.parametrize("name", CLASSIC)
def test_each_baseline_denoises_with_the_true_or_the_estimated_sigma(name, astronaut_pair):
    noisy, clean = astronaut_pair  # σ = 25
    given = denoise_image("x", noisy, clean, Method(name), sigma=25.0, cpus=1)
    assert given["psnr"] > given["noisy_psnr"] + 4, (given["psnr"], given["noisy_psnr"])
    assert (given["noise_sigma"], given["sigma_source"], given["device"]) == (25.0, "dataset", "cpu")
    estimated = denoise_image("x", noisy, clean, Method(name), sigma=None, cpus=1)
    assert estimated["sigma_source"] == "estimated" and estimated["noise_sigma"] == pytest.approx(
        estimate_noise_sigma(noisy)
    )
    assert estimated["psnr"] > estimated["noisy_psnr"] + 3


def test_the_noise_estimate_recovers_a_known_gaussian_sigma(astronaut_pair):
    noisy, _ = astronaut_pair
    assert estimate_noise_sigma(noisy) == pytest.approx(25.0, rel=0.15)


def test_settings_record_the_method_and_round_trip_to_the_same_hash():
    config = S2SConfig(steps=10, passes=2, lambda_iqa=0.0)
    methods = [Method(name, config) for name in REGISTRY]
    for method in methods:
        assert method.settings["method"] == method.name  # no setting of a baseline hides its name
        assert Method.from_settings(json.loads(json.dumps(method.settings))).hash == method.hash
    assert len({method.hash for method in methods}) == len(methods)
    assert Method("s2s+", config.replace(device="cpu")).hash == methods[0].hash  # where it runs changes no result
    assert (
        methods[0].row_hash("fp32") == Method("s2s+", config.replace(precision="fp32")).hash != methods[0].hash
    )  # rows name the arithmetic used, not "auto"
    assert Method("nlm", config.replace(steps=99)).hash == methods[2].hash  # S2S+ settings do not touch a baseline
    assert Method("nlm", config, RunSettings(quantize="floor")).hash != methods[2].hash
    row = Method("cbm3d", config).row_values()
    assert (
        row["method"] == "cbm3d"
        and row["p"] is None
        and row["steps"] is None
        and json.loads(row["settings"])["profile"] == "np"
    )
    assert Method.from_settings({"p": 0.5, "steps": 3}).name == "s2s+"  # a config.yaml written before methods existed


def test_an_unknown_method_and_a_missing_bm3d_are_one_line_errors(monkeypatch):
    with pytest.raises(ConfigError, match="--method bm4d: expected one of s2s\\+, cbm3d, nlm, wavelet, zsn2n"):
        Method("bm4d")
    Method("cbm3d").check_installed()  # installed here (the dev extra)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "bm3d" else real_find_spec(name, *args)
    )
    with pytest.raises(ConfigError, match='bm3d package is not installed; pip install "s2s-sweep\\[baselines\\]"'):
        Method("cbm3d").check_installed()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--set", "steps=5"], "--set steps=5: --method nlm takes only quantize= and memory_mb="),
        (["--sweep"], "--method nlm: --sweep searches S2S+'s settings"),
        (["--config", "best"], "--method nlm: --config best holds S2S+ settings"),
    ],
)
def test_s2s_settings_given_to_a_baseline_are_refused_before_any_work(arguments, message, tmp_path, capsys):
    assert main(["demo", "--method", "nlm", "--out", str(tmp_path), *arguments]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line
