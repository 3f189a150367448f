"""Run configurations: the search-space files in search_spaces/ and `--config` / `--set`.

A search-space file (one per dataset family, plus demo.yaml and folder.yaml) holds the
paper configuration, the search ranges, the sweep's subset, budget, resources and early
stopping. It is validated on load; every error is one line naming the file and the key.

A run configuration is a flat mapping of S2SConfig fields (p, steps, lambda_iqa, passes, seed,
...) and RunSettings fields (quantize, init, ...: s2s_sweep/run_settings.py): `--config paper`
takes the file's `paper:` section, `--config best` the best configuration a sweep saved,
`--config FILE.yaml` a flat mapping such as a run's own config.yaml; then `--set key=value`
overrides single fields.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from model.config import S2SConfig
from model.errors import UserError
from s2s_sweep.objectives import DEFAULT_OBJECTIVE, MIN_AGREEMENT
from s2s_sweep.objectives import REGISTRY as OBJECTIVES
from s2s_sweep.run_settings import RUN_SETTINGS, split

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
FLAG_FIELDS = (
    "device",
    "iqa_weights",
)  # where a run computes, given by --device and --iqa-weights, never by a config file
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(S2SConfig) if f.name not in FLAG_FIELDS) + RUN_SETTINGS
SEARCHED = ("p", "steps", "lambda_iqa")


class ConfigError(UserError, ValueError):
    """A configuration file or override that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    step: float | None = None  # grid step (uniform or integer)
    log: bool = False
    allow_zero: bool = False  # 0 is a candidate besides [low, high] (λ_IQA off)

    @property
    def fixed_zero(self) -> bool:
        """`lambda_iqa: 0` in the file: not searched, always 0."""
        return self.high == 0


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    datasets: tuple[str, ...]
    paper: dict
    search: dict[str, Range]
    search_passes: int
    subset_size: int
    subset_seed: int
    subset_heldout: int  # of the subset's images, kept out of the search to validate its best (sweep/validation.py)
    trials: int
    concurrency: int
    cpus_per_trial: float
    gpus_per_trial: float
    grace_images: int
    reduction_factor: int
    objective: str = DEFAULT_OBJECTIVE  # what trials maximise (s2s_sweep/objectives/)
    steps_within: float = 0.05  # the saved best takes the fewest steps this close (objective's unit) to its peak
    inits: tuple[str, ...] = ("cold",)  # starts searched: cold and/or warm (docs/sweep.md, Warm starts)
    agreement: dict[str, float] = dataclasses.field(default_factory=dict)  # proxy objective -> Spearman with PSNR


def space_file_for(dataset: str) -> Path:
    """search_spaces/<family>.yaml for a dataset name: cbsd68-25 -> cbsd68.yaml, folder:X -> folder.yaml."""
    family = "folder" if dataset.startswith("folder:") else dataset.split("-")[0]
    return SPACES_DIR / f"{family}.yaml"


def _require(ok: bool, where: str, expected: str, value) -> None:
    if not ok:
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")


def _mapping(content: dict, key: str, where: str, required: set[str], optional: set[str] = frozenset()) -> dict:
    value = content.get(key)
    _require(isinstance(value, dict), f"{where}: {key}", "a mapping", value)
    unknown = sorted(set(value) - required - optional)
    _require(not unknown, f"{where}: {key}", f"only keys {', '.join(sorted(required | optional))}", ", ".join(unknown))
    missing = sorted(required - set(value))
    _require(not missing, f"{where}: {key}", f"the keys {', '.join(missing)}", "none")
    return value


def _number(value, where: str, minimum: float = 0.0, integer: bool = False) -> float:
    kind = int if integer else (int, float)
    _require(
        isinstance(value, kind) and not isinstance(value, bool) and value >= minimum,
        where,
        f"{'an integer' if integer else 'a number'} >= {minimum}",
        value,
    )
    return value


def parse_range(name: str, spec, where: str) -> Range:
    if name == "lambda_iqa" and spec == 0:  # not searched: trained without the IQA loss
        return Range(0.0, 0.0)
    _mapping({f"search.{name}": spec}, f"search.{name}", where, {"low", "high"}, {"step", "log", "allow_zero"})
    low, high = (_number(spec[k], f"{where}: search.{name}.{k}") for k in ("low", "high"))
    _require(low < high, f"{where}: search.{name}", "low < high", f"{low} .. {high}")
    if name == "p":
        _require(0 < low and high < 1, f"{where}: search.p", "a range inside (0, 1)", f"{low} .. {high}")
    if name == "steps":
        _require(isinstance(low, int) and low >= 1, f"{where}: search.steps.low", "an integer >= 1", low)
    log = spec.get("log", False)
    _require(
        isinstance(log, bool) and (not log or low > 0),
        f"{where}: search.{name}.log",
        "true/false, with low > 0 when true",
        log,
    )
    step = spec.get("step")
    if step is not None:
        _number(step, f"{where}: search.{name}.step", minimum=1 if name == "steps" else 1e-12, integer=name == "steps")
        _require(not log, f"{where}: search.{name}", "either step or log, not both", spec)
    return Range(low, high, step, log, bool(spec.get("allow_zero", False)))


def read_yaml(path: Path):
    """The content of a user's YAML file; a file that does not parse is a one-line ConfigError."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search-space file not found")
    content = read_yaml(path)
    where = str(path)
    top = {"datasets", "paper", "search", "subset", "budget", "resources", "early_stopping"}
    _require(isinstance(content, dict), where, "a mapping at the top level", type(content).__name__)
    unknown = sorted(set(content) - top)
    _require(not unknown, where, f"only the top-level keys {', '.join(sorted(top))}", ", ".join(unknown))
    datasets = content.get("datasets")
    _require(
        isinstance(datasets, list) and all(isinstance(d, str) for d in datasets),
        f"{where}: datasets",
        "a list of names",
        datasets,
    )
    paper = run_overrides(content.get("paper"), f"{where}: paper")  # keys known, values in range
    search = _mapping(
        content,
        "search",
        where,
        {*SEARCHED, "passes"},
        {"objective", "agreement", "steps_within", "steps_within_db", "init"},
    )
    inits = search.get("init", ["cold"])
    _require(
        isinstance(inits, list) and inits and set(inits) <= {"cold", "warm"} and len(set(inits)) == len(inits),
        f"{where}: search.init",
        "a list of cold and/or warm",
        inits,
    )
    subset = _mapping(content, "subset", where, {"size", "seed"}, {"heldout"})
    budget = _mapping(content, "budget", where, {"trials", "concurrency"})
    resources = _mapping(content, "resources", where, {"cpus_per_trial", "gpus_per_trial"})
    stopping = _mapping(content, "early_stopping", where, {"grace_images", "reduction_factor"})
    return SearchSpace(
        path=path,
        datasets=tuple(datasets),
        paper=paper,
        search={name: parse_range(name, search[name], where) for name in SEARCHED},
        search_passes=_number(search["passes"], f"{where}: search.passes", 1, integer=True),
        subset_size=_number(subset["size"], f"{where}: subset.size", 1, integer=True),
        subset_seed=_number(subset["seed"], f"{where}: subset.seed", 0, integer=True),
        subset_heldout=_number(subset.get("heldout", 0), f"{where}: subset.heldout", 0, integer=True),
        trials=_number(budget["trials"], f"{where}: budget.trials", 1, integer=True),
        concurrency=_number(budget["concurrency"], f"{where}: budget.concurrency", 1, integer=True),
        cpus_per_trial=_number(resources["cpus_per_trial"], f"{where}: resources.cpus_per_trial", 0),
        gpus_per_trial=_number(resources["gpus_per_trial"], f"{where}: resources.gpus_per_trial", 0),
        grace_images=_number(stopping["grace_images"], f"{where}: early_stopping.grace_images", 1, integer=True),
        reduction_factor=_number(
            stopping["reduction_factor"], f"{where}: early_stopping.reduction_factor", 2, integer=True
        ),
        inits=tuple(inits),
        **parse_objective(search, where),
    )


def parse_objective(search: dict, where: str) -> dict:
    """`search.objective`, its `steps_within` and the recorded `agreement` of the proxies: a proxy
    objective (no clean image needed) only where the file records that it ranks settings as PSNR does."""
    name = search.get("objective", DEFAULT_OBJECTIVE)
    _require(name in OBJECTIVES, f"{where}: search.objective", f"one of {', '.join(OBJECTIVES)}", name)
    objective = OBJECTIVES[name]
    agreement = search.get("agreement", {})
    proxies = [key for key, value in OBJECTIVES.items() if value.proxy]
    _require(
        isinstance(agreement, dict)
        and all(
            key in proxies and isinstance(value, (int, float)) and -1 <= value <= 1 for key, value in agreement.items()
        ),
        f"{where}: search.agreement",
        f"a mapping of {', '.join(proxies)} to a Spearman correlation in [-1, 1]",
        agreement,
    )
    if objective.proxy and agreement.get(name, -1) < MIN_AGREEMENT:
        recorded = f"records {agreement[name]}" if name in agreement else "records none"
        raise ConfigError(
            f"{where}: search.objective: {name} may drive a sweep only where it ranks settings as PSNR does "
            f"(search.agreement.{name} >= {MIN_AGREEMENT}, measured by benchmarks/bench_landscape.py); this file "
            f"{recorded}: use {DEFAULT_OBJECTIVE}"
        )
    key = "steps_within_db" if "steps_within_db" in search else "steps_within"  # _db: the older spelling
    _require(
        not {"steps_within", "steps_within_db"} <= set(search),
        f"{where}: search",
        "steps_within once",
        "both spellings",
    )
    _require(
        key == "steps_within" or objective.unit == "dB",
        f"{where}: search.steps_within_db",
        f"search.steps_within (the objective {name} is not in dB)",
        search.get(key),
    )
    within = _number(search.get(key, objective.within), f"{where}: search.{key}", 0)
    return {"objective": name, "steps_within": within, "agreement": dict(agreement)}


def run_overrides(values, where: str) -> dict:
    """A flat mapping of run settings, checked for unknown keys and valid values."""
    _require(isinstance(values, dict), where, "a mapping of run settings", values)
    unknown = sorted(set(values) - set(RUN_FIELDS))
    _require(not unknown, where, f"keys among {', '.join(RUN_FIELDS)}", ", ".join(unknown))
    try:
        split(values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}: {error}") from None
    return dict(values)


def parse_set(assignments: list[str]) -> dict:
    """`--set p=0.5 steps=2000` -> {"p": 0.5, "steps": 2000}; values are parsed as YAML scalars."""
    values = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        _require(
            bool(sep) and key in RUN_FIELDS,
            f"--set {assignment}",
            f"key=value with key among {', '.join(RUN_FIELDS)}",
            assignment,
        )
        values[key] = parse_value(text)
    return run_overrides(values, "--set")


def parse_value(text: str):
    """'20' -> 20, '2e-8' -> 2e-08 (YAML 1.1 would keep that a string), 'true' -> True, else the text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def resolve_run_config(dataset: str, config: str, assignments: list[str], saved_best: tuple[str, str | None]) -> dict:
    """The run settings of `dataset` from `--config` (paper | best | FILE.yaml) and `--set`.

    `saved_best` is (location, text or None) of the best configuration a sweep saved for
    this dataset in the output store; it is read only for `--config best`.
    """
    if config == "paper":
        values = load_space(space_file_for(dataset)).paper
    elif config == "best":
        location, text = saved_best
        if text is None:
            raise ConfigError(
                f"--config best: no saved best configuration at {location}; run the sweep first (--sweep), or use "
                "--config paper"
            )
        values, note = settings_to_run(yaml.safe_load(text), load_space(space_file_for(dataset)).paper, location)
        if note:
            print(note, flush=True)
    else:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"--config {config}: expected paper, best or an existing YAML file")
        content = read_yaml(path)  # a run's config.yaml records its method: run.py checks it
        # in a run's config.yaml, but given by --method, --device, --iqa-weights; a best_config.yaml's records
        recorded = ("method", *FLAG_FIELDS, "selection", "heldout")
        values = run_overrides(
            {k: v for k, v in content.items() if k not in recorded} if isinstance(content, dict) else content, str(path)
        )
    return {**values, **parse_set(assignments)}


def settings_to_run(saved: dict, paper: dict, location: str) -> tuple[dict, str | None]:
    """The run settings of a sweep's saved best (best_config.yaml), or the paper configuration it
    was validated against (`paper`: the family's, for a block that does not record it) where that
    validation did not show the best at least as good (sweep/validation.py); and the line that
    says so. A best saved before validation existed is taken as it is."""
    _require(isinstance(saved, dict), location, "a mapping of run settings", saved)
    heldout = saved.get("heldout") or {}
    settings = run_overrides({k: v for k, v in saved.items() if k not in ("selection", "heldout")}, location)
    if heldout.get("shown", True):
        return settings, None
    return dict(heldout.get("paper", paper)), (
        f"{location}: {heldout_line(heldout)}; running the paper's configuration (to run the best anyway: "
        "copy that file, pass --config FILE.yaml)"
    )


def heldout_line(block: dict) -> str:
    """best_config.yaml's `heldout:` block in words, for the sweep, `--config best` and the report."""
    if block.get("gain_db") is None:
        return f"the sweep's best is not validated: {block.get('why')}"
    low, high = block["ci95_db"]
    verdict = "shown at least as good" if block["shown"] else f"not shown at least as good ({block['why']})"
    return (
        f"the sweep's best − the paper's configuration: {block['gain_db']:+.2f} dB [{low:+.2f}, {high:+.2f}] "
        f"({block['metric']}, {block['images']} images the search did not see): {verdict}"
    )
