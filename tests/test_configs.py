import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from model.config import PAPER_DEFAULTS, S2SConfig
from s2s_sweep.configs import SPACES_DIR, ConfigError, load_space, parse_set, resolve_run_config, space_file_for
from s2s_sweep.methods import Method
from s2s_sweep.methods.base import ADDED_LATER
from s2s_sweep.run import main as run_main
from s2s_sweep.run_settings import RUN_SETTINGS, RunSettings, join, split

NO_BEST = ("OUT/demo/best_config.yaml", None)


def test_every_shipped_search_space_loads_with_the_paper_defaults():
    files = sorted(SPACES_DIR.glob("*.yaml"))
    assert {f.stem for f in files} == {"cbsd68", "sidd", "polyu", "demo", "folder"}
    for path in files:
        lam = load_space(path).search["lambda_iqa"]
        assert lam.fixed_zero if path.stem == "demo" else (lam.allow_zero and lam.log)
    for family, defaults in PAPER_DEFAULTS.items():
        paper = load_space(SPACES_DIR / f"{family}.yaml").paper
        assert paper == {**defaults, "lambda_iqa": 2e-8, "passes": 500}


def test_dataset_names_map_to_their_family_file():
    assert space_file_for("cbsd68-50").name == "cbsd68.yaml"
    assert space_file_for("sidd-benchmark").name == "sidd.yaml"
    assert space_file_for("folder:/data/x-y").name == "folder.yaml"


def write_space(tmp_path: Path, **changes) -> Path:
    content = yaml.safe_load((SPACES_DIR / "cbsd68.yaml").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        target = content
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[key]
        else:
            target[key] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"extra": 1}, "expected only the top-level keys"),
        ({"search.p.low": 0.99}, "search.p: expected low < high"),
        ({"search.p.high": 1.5}, "search.p: expected a range inside (0, 1)"),
        ({"search.steps.low": "many"}, "search.steps.low: expected a number >= 0"),
        ({"search.lambda_iqa.bogus": 1}, "search.lambda_iqa: expected only keys"),
        ({"search.passes": 0}, "search.passes: expected an integer >= 1"),
        ({"budget.trials": 0}, "budget.trials: expected an integer >= 1"),
        ({"subset": None}, "subset: expected a mapping"),
        ({"search.steps": 100}, "search.steps: expected a mapping"),
        ({"paper.p": 1.0}, "paper: p: expected a probability in (0, 1)"),
        ({"paper.dropout": 0.3}, "paper: expected keys among p, steps"),
        ({"early_stopping.reduction_factor": 1}, "early_stopping.reduction_factor: expected an integer >= 2"),
        ({"subset.heldout": -1}, "subset.heldout: expected an integer >= 0"),
        ({"search.objective": "lpips"}, "search.objective: expected one of psnr, ssim, heldout"),
        ({"search.agreement": {"psnr": 0.9}}, "search.agreement: expected a mapping of heldout to a Spearman"),
        ({"search.agreement.heldout": 1.5}, "search.agreement: expected a mapping of heldout to a Spearman"),
        ({"search.objective": "ssim", "search.steps_within": None, "search.steps_within_db": 0.05}, "expected search"),
        ({"search.steps_within_db": 0.05}, "search: expected steps_within once"),
        ({"search.steps_within": -1}, "search.steps_within: expected a number >= 0"),
    ],
)
def test_broken_search_spaces_name_the_key(tmp_path, changes, message):
    path = write_space(tmp_path, **changes)
    with pytest.raises(ConfigError) as error:
        load_space(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_the_objective_and_where_a_proxy_may_drive_the_sweep(tmp_path):
    assert [load_space(SPACES_DIR / f"{f}.yaml").objective for f in ("cbsd68", "polyu", "demo")] == ["psnr"] * 3
    space = load_space(write_space(tmp_path, **{"search.objective": "heldout"}))  # CBSD68 records 0.998
    assert space.objective == "heldout" and space.agreement == {"heldout": 0.998} and space.steps_within == 0.05
    ssim = load_space(write_space(tmp_path, **{"search.objective": "ssim", "search.steps_within": None}))
    assert ssim.steps_within == 0.001  # the objective's own default, in its unit
    older = load_space(write_space(tmp_path, **{"search.steps_within": None, "search.steps_within_db": 0.1}))
    assert older.steps_within == 0.1  # the earlier spelling still reads, for dB objectives
    polyu = yaml.safe_load((SPACES_DIR / "polyu.yaml").read_text())
    polyu["search"]["objective"] = "heldout"
    path = tmp_path / "polyu.yaml"
    path.write_text(yaml.safe_dump(polyu))
    recorded = polyu["search"]["agreement"]["heldout"]  # the committed landscape's figure (test below)
    with pytest.raises(
        ConfigError, match=rf"polyu.yaml: search.objective: heldout may drive .* this file records {recorded}"
    ):
        load_space(path)
    del polyu["search"]["agreement"]
    path.write_text(yaml.safe_dump(polyu))
    with pytest.raises(ConfigError, match=r"search.agreement.heldout >= 0.8.*this file records none: use psnr"):
        load_space(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("paper: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_space(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="search-space file not found"):
        load_space(tmp_path / "none.yaml")


def test_set_values_are_typed():
    assert parse_set(["lambda_iqa=2e-8", "steps=20", "channels_last=false", "precision=bf16"]) == {
        "lambda_iqa": 2e-8,
        "steps": 20,
        "channels_last": False,
        "precision": "bf16",
    }
    with pytest.raises(
        ConfigError, match="--set steps=2.5: expected an integer >= 1|--set: steps: expected an integer >= 1"
    ):
        parse_set(["steps=2.5"])
    with pytest.raises(ConfigError, match="--set p: expected key=value"):
        parse_set(["p"])


def test_a_runs_settings_split_into_the_one_image_config_and_the_runs_own():
    values = parse_set(["p=0.5", "quantize=floor", "init=warm", "warm_images=2"])  # --set takes both kinds
    config, run = split(values)
    assert (config.p, run.quantize, run.init, run.warm_images) == (0.5, "floor", "warm", 2)
    assert not set(RUN_SETTINGS) & set(S2SConfig.__dataclass_fields__)  # model/ never sees them
    assert split(join(config, run)) == (config, run)
    with pytest.raises(ConfigError, match="--set: warm_images: expected an integer >= 1, got 0"):
        parse_set(["warm_images=0"])
    # a config.yaml recorded when S2SConfig held them, before the settings added later, still resumes as the same
    # run: at their ADDED_LATER values (one seed for every image, no stabiliser)
    fields = join(S2SConfig(steps=8), RunSettings(quantize="floor", init="warm"))
    recorded = {"method": "s2s+", **{key: value for key, value in fields.items() if key not in ADDED_LATER}}
    method = Method.from_settings(recorded)
    assert method.run == RunSettings(quantize="floor", init="warm", seeding="run") and method.settings == recorded
    assert Method("s2s+", S2SConfig(steps=8), RunSettings(quantize="floor", init="warm")).hash != method.hash


def test_run_config_from_paper_best_file_and_set(tmp_path, capsys):
    assert resolve_run_config("cbsd68-25", "paper", [], NO_BEST) == {
        "p": 0.4,
        "steps": 4000,
        "lambda_iqa": 2e-8,
        "passes": 500,
    }
    assert resolve_run_config("sidd", "paper", ["passes=100"], NO_BEST)["passes"] == 100
    best = resolve_run_config("demo", "best", [], ("OUT/demo/best_config.yaml", "p: 0.6\nsteps: 150\n"))
    assert best == {"p": 0.6, "steps": 150}
    (tmp_path / "mine.yaml").write_text("p: 0.55\nsteps: 800\nlambda_iqa: 0.0\n")
    assert resolve_run_config("demo", str(tmp_path / "mine.yaml"), ["seed=3"], NO_BEST) == {
        "p": 0.55,
        "steps": 800,
        "lambda_iqa": 0.0,
        "seed": 3,
    }
    with pytest.raises(ConfigError, match="--config nope.yaml: expected paper, best or an existing YAML file"):
        resolve_run_config("demo", "nope.yaml", [], NO_BEST)
    run_config = S2SConfig(p=0.6, steps=300, lambda_iqa=0.0)  # a run's own config.yaml is usable as --config
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(Method("s2s+", run_config).settings))
    values = resolve_run_config("demo", str(tmp_path / "config.yaml"), [], NO_BEST)
    assert split(values) == (run_config, RunSettings())
    (tmp_path / "cbm3d.yaml").write_text(yaml.safe_dump(Method("cbm3d").settings))
    # the runner checks the method a run's config.yaml records (s2s_sweep/run.py)
    assert run_main(["demo", "--config", str(tmp_path / "cbm3d.yaml"), "--out", str(tmp_path)]) == 2
    message = "holds the settings of a cbm3d run, not of S2S+; run it with --method cbm3d"
    assert message in capsys.readouterr().err
    (tmp_path / "broken.yaml").write_text("p: [0.4\n")  # a file that does not parse: one line, not a traceback
    assert run_main(["demo", "--config", str(tmp_path / "broken.yaml"), "--out", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'broken.yaml'}: not valid YAML")


def test_the_recorded_agreements_are_the_committed_landscape_figures():
    landscape = json.loads((REPO / "benchmarks/results/bench_landscape.json").read_text())
    for kind, entry in landscape["kinds"].items():
        recorded = load_space(space_file_for(kind)).agreement["heldout"]
        assert recorded == round(entry["objective_spearman"], 3)
        assert landscape["objective_usable"][kind] == (recorded >= 0.8)
