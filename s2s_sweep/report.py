"""A report of the runs in an output store: each dataset's methods side by side, and beside the paper.

    python -m s2s_sweep.report outputs                                  # every dataset found there
    python -m s2s_sweep.report s3://bucket/s2s --datasets cbsd68-25 polyu --data-root /data

Reads only the output store (each run's Parquet table, config.yaml and run.json; each sweep's
tables and best configuration), never MLflow, so it works on any copy of the outputs. Writes
OUT/reports/REPORT_ID/report.html (self-contained: plots and images inline, no scripts, opens
offline) and report.md (the summary tables), and logs both as artifacts of an MLflow run of
kind `report` (experiment s2s-sweep/reports).

Per dataset: every run's method, images, mean PSNR/SSIM with 95% confidence intervals (Student's
t over the images) and mean gain over the noisy input, beside the paper's figures (Tables 2 and 3)
with the ways the run's protocol differs from the paper's; each image's gain against its noisy
PSNR and the PSNR distribution per run; contact sheets of the images the best run improves most
and least (noisy and clean crops when the dataset is at hand); the sweeps; and the exact settings
and code version of every run.
"""

import argparse
import base64
import html
import io
import json
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import yaml
from PIL import Image
from scipy import stats

from s2s_sweep.configs import ConfigError, heldout_line, load_space, space_file_for
from s2s_sweep.datasets import Dataset, DatasetError, open_dataset
from s2s_sweep.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_TRACKING_BEHIND, USER_ERRORS
from s2s_sweep.images import ImageError, encode_png, to_uint8
from s2s_sweep.methods import DEFAULT_METHOD, METHODS, REGISTRY, Method
from s2s_sweep.objectives import REGISTRY as OBJECTIVES
from s2s_sweep.objectives import SCORE
from s2s_sweep.plots import sweep_plots
from s2s_sweep.results import read_results
from s2s_sweep.session import code_version, open_session, write_record
from s2s_sweep.store import OutputStore
from s2s_sweep.tracking import RunTracker, sheet_crop
from s2s_sweep.uris import redact

PAPER_TEST_SETS = {
    "cbsd68-15": (68, "the 68 images"),
    "cbsd68-25": (68, "the 68 images"),
    "cbsd68-50": (68, "the 68 images"),
    "sidd": (1280, "the 1280 validation blocks of 256²"),
    "polyu": (30, "30 of the 100 crops, which the paper does not name"),
}
SHEET_IMAGES = 3  # best and worst images shown per dataset


@dataclass
class Run:
    dataset: str  # the dataset's name, as given to the runner
    key: str  # its folder in the store
    run_id: str
    settings: dict  # the run's config.yaml
    rows: pd.DataFrame  # its results table, one row per image

    @property
    def method(self) -> str:
        return self.settings.get("method", DEFAULT_METHOD)

    @property
    def label(self) -> str:
        """The method and the settings that tell its runs apart."""
        return Method.from_settings(self.settings).description


@dataclass
class Sweep:
    key: str
    sweep_id: str
    trials: pd.DataFrame
    best: dict  # best_config.yaml, with its `selection`
    plot: bytes  # PNG: PSNR against training steps, with the front and the chosen point


def find_runs(store: OutputStore, datasets: list[str] | None) -> list[Run]:
    """Every run with at least one row, of the named datasets (names or store keys; all when None)."""
    runs = []
    for key in store.folders():
        for run_id in store.folders(key):
            record = store.read_text(f"{key}/{run_id}/run.json")
            if record is None:
                continue
            name = json.loads(record)["dataset"]
            if datasets and not {name, key} & set(datasets):
                continue
            rows = read_results(store, key, run_id).to_pandas()
            if len(rows):
                settings = yaml.safe_load(store.read_text(f"{key}/{run_id}/config.yaml") or "{}")
                runs.append(Run(name, key, run_id, settings, rows))
    return sorted(runs, key=lambda r: (r.dataset, METHODS.index(r.method), r.run_id))


def find_sweeps(store: OutputStore, key: str) -> list[Sweep]:
    sweeps = []
    for sweep_id in store.folders(f"{key}/sweeps"):
        folder = f"{key}/sweeps/{sweep_id}"
        best = store.read_text(f"{folder}/best_config.yaml")
        if best is None:  # not finished
            continue
        trials, curves = (
            pads.dataset(store.path(f"{folder}/{name}"), filesystem=store.fs, partitioning="hive").to_table()
            for name in ("trials", "curves")
        )
        best = yaml.safe_load(best)
        if "objective" not in best["selection"]:  # recorded before objectives (2026-11): PSNR under its own names
            best["selection"] = {
                {"peak_mean_psnr": "peak_score", "chosen_mean_psnr": "chosen_score", "within_db": "within"}.get(k, k): v
                for k, v in best["selection"].items()
            } | {"objective": "psnr"}
            trials = trials.append_column("objective", [["psnr"] * trials.num_rows]).append_column(
                SCORE, trials["mean_psnr"]
            )
        plot = sweep_plots(trials, curves, best["selection"])["score_vs_steps.png"]
        sweeps.append(Sweep(key, sweep_id, trials.to_pandas(), best, plot))
    return sweeps


def mean_interval(values: pd.Series) -> tuple[float, float, int]:
    """(mean, half-width of its 95% confidence interval by Student's t, n); the half-width is nan below 2 values."""
    values = values.dropna().to_numpy(float)
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), 0
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    return float(values.mean()), float(half), n


def summarize(run: Run) -> dict:
    rows = run.rows
    ok = rows[rows["status"] == "ok"]
    return {
        "images": len(rows),
        "failed": len(rows) - len(ok),
        "psnr": mean_interval(ok["psnr"]),
        "ssim": mean_interval(ok["ssim"]),
        "ssim_3d": mean_interval(ok["ssim_3d"] if "ssim_3d" in ok else pd.Series(dtype=float)),  # runs before it: none
        "noisy_psnr": mean_interval(ok["noisy_psnr"]),
        "gain": mean_interval(ok["psnr"] - ok["noisy_psnr"]),
    }


def protocol_notes(run: Run) -> list[str]:
    """How the run's protocol differs from the paper's, for a dataset the paper reports."""
    if run.dataset not in PAPER_TEST_SETS:
        return []
    images, test_set = PAPER_TEST_SETS[run.dataset]
    notes = (
        []
        if len(run.rows) == images and run.dataset != "polyu"
        else [f"{len(run.rows)} images; the paper tests {test_set}"]
    )
    ok = run.rows[run.rows["status"] == "ok"]
    paper = load_space(space_file_for(run.dataset)).paper
    return notes + REGISTRY[run.method].protocol_notes(ok, run.settings, paper)


def format_interval(interval: tuple[float, float, int], digits: int) -> str:
    mean, half, n = interval
    if n == 0:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if np.isfinite(half) else "")


def summary_rows(runs: list[Run]) -> list[dict[str, str]]:
    """One row per run, as text: the columns of both the Markdown and the HTML table. Runs of
    different images are also compared on the images they all scored."""
    scored = [set(run.rows.loc[(run.rows["status"] == "ok") & run.rows["psnr"].notna(), "image_id"]) for run in runs]
    shared = set.intersection(*scored) if scored else set()
    table = []
    for run in runs:
        summary = summarize(run)
        on_shared = run.rows.loc[run.rows["image_id"].isin(shared), "psnr"]
        paper = REGISTRY[run.method].published.get(run.dataset)
        table.append(
            {
                "method": run.label,
                "run": run.run_id,
                "images (failed)": f"{summary['images']} ({summary['failed']})",
                "PSNR dB, 95% CI": format_interval(summary["psnr"], 2),
                "SSIM (per channel), 95% CI": format_interval(summary["ssim"], 4),
                "SSIM (3-D window, MATLAB), 95% CI": format_interval(summary["ssim_3d"], 4),
                "gain over noisy dB": format_interval(summary["gain"], 2),
                f"PSNR on the {len(shared)} shared images": f"{on_shared.mean():.2f}" if shared else "–",
                "paper PSNR / SSIM (SSIM protocol unknown)": f"{paper[0]:.2f} / {paper[1]:.4f}" if paper else "–",
                "differs from the paper": "; ".join(protocol_notes(run)) if paper else "",
            }
        )
    return table


BEST = " ★"  # marks the best value of a column of the efficiency table
EFFICIENCY_NOTE = (
    "Seconds: training + inference per image, from the rows; a megapixel is 10^6 pixels. Peak memory: GPU memory on "
    "CUDA, else the worker process's peak RSS (an upper bound once a worker ran larger images). ★: the best value "
    "reproduced here. Quoted timings come from other hardware and image sizes."
)


def efficiency_rows(runs: list[Run]) -> list[dict[str, str]]:
    """Per run, as papers of the field print it: seconds per image (training + inference) and per
    megapixel (10^6 pixels), device, peak memory and parameters, from the rows ("reproduced here");
    then the timings each method's paper publishes ("quoted"). ★: the best reproduced value of a column."""
    measured = []
    for run in runs:
        ok = run.rows[run.rows["status"] == "ok"]
        if not len(ok):
            continue
        seconds = ok["train_seconds"].fillna(0) + ok["inference_seconds"].fillna(0)
        parameters = ok["parameters"].dropna() if "parameters" in ok else pd.Series(dtype=float)  # runs before it: none
        measured.append(
            {
                "method": run.label,
                "run": run.run_id,
                "source": "reproduced here",
                "device": ", ".join(sorted(set(ok["device"].dropna()))),
                "seconds per image": float(seconds.mean()),
                "seconds per megapixel": float(seconds.sum() / (ok["height"] * ok["width"]).sum() * 1e6),
                "peak memory MB": float(ok["peak_memory_mb"].max()),
                "parameters": int(parameters.iloc[0]) if len(parameters) else None,
            }
        )
    formats = {"seconds per image": "{:,.1f}", "seconds per megapixel": "{:,.1f}", "peak memory MB": "{:,.0f}"}
    formats["parameters"] = "{:,}"
    table = []
    for row in measured:
        text = dict(row)
        for column, form in formats.items():
            values = [other[column] for other in measured if other[column] is not None]
            value = row[column]
            text[column] = "–" if value is None else form.format(value) + (BEST if value == min(values) else "")
        table.append(text)
    for name in dict.fromkeys(run.method for run in runs):
        for quote in REGISTRY[name].quoted_speed:
            table.append(
                {
                    "method": REGISTRY[name].label,
                    "run": "",
                    "source": f"quoted: {quote['source']}",
                    "device": quote["device"],
                    "seconds per image": quote["seconds per image"],
                }
                | {column: "–" for column in ("seconds per megapixel", "peak memory MB", "parameters")}
            )
    return table


def markdown_table(rows: list[dict[str, str]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[k].replace("|", "\\|") for k in header) + " |" for row in rows]
    return "\n".join(lines)


def html_table(rows: list[dict[str, str]]) -> str:
    header = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def image_plots(runs: list[Run]) -> bytes:
    """PNG: each image's gain over its noisy PSNR against the noisy PSNR, and the PSNR distribution, per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (scatter, boxes) = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    scored = [(run, run.rows[(run.rows["status"] == "ok") & run.rows["psnr"].notna()]) for run in runs]
    scored = [(run, rows) for run, rows in scored if len(rows)]
    for run, rows in scored:
        scatter.scatter(
            rows["noisy_psnr"], rows["psnr"] - rows["noisy_psnr"], s=14, alpha=0.7, label=f"{run.label} ({run.run_id})"
        )
    scatter.axhline(0, color="grey", lw=0.8)
    scatter.set_xlabel("noisy PSNR (dB)")
    scatter.set_ylabel("gain: denoised − noisy PSNR (dB)")
    scatter.legend(fontsize=7)
    jitter = np.random.default_rng(0)
    for index, (_, rows) in enumerate(scored):  # every image a dot, the mean a bar
        boxes.scatter(rows["psnr"], index + jitter.uniform(-0.15, 0.15, len(rows)), s=10, alpha=0.6)
        boxes.plot([rows["psnr"].mean()] * 2, [index - 0.3, index + 0.3], color="black")
    # long run names wrap onto short lines, so constrained layout makes room for them left of the axis
    ticks = [textwrap.fill(f"{run.label} {run.run_id}", width=24) for run, _ in scored]
    boxes.set_yticks(range(len(scored)), ticks, fontsize=7)
    boxes.set_xlabel("PSNR per image (dB); bar: mean")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def contact_sheets(store: OutputStore, runs: list[Run], dataset: Dataset | None) -> str:
    """HTML tables of centre crops (noisy | each run | clean) of the images the best run improves most and least."""
    scored = [run for run in runs if run.rows["psnr"].notna().any()]
    if not scored:
        return ""
    best = max(scored, key=lambda run: summarize(run)["psnr"][0])
    ok = best.rows[(best.rows["status"] == "ok") & best.rows["psnr"].notna()]
    ranked = ok.assign(gain=ok["psnr"] - ok["noisy_psnr"]).sort_values("gain", ascending=False)
    sections = []
    for title, chosen in (
        ("largest gain", ranked.head(SHEET_IMAGES)),
        ("smallest gain", ranked.tail(min(SHEET_IMAGES, max(0, len(ranked) - SHEET_IMAGES))).iloc[::-1]),
    ):
        if not len(chosen):
            continue
        header = ["image", "noisy", *[f"{run.label} ({run.run_id})" for run in runs], "clean"]
        body = []
        for image_id in chosen["image_id"]:
            noisy, clean = load_pair(dataset, image_id)
            cells = [html.escape(image_id), tile(noisy)]
            for run in runs:
                row = run.rows[run.rows["image_id"] == image_id]
                output = row["output"].iloc[0] if len(row) and row["status"].iloc[0] == "ok" else None
                data = store.read_bytes(f"{run.key}/{run.run_id}/{output}") if output else None
                caption = f"{row['psnr'].iloc[0]:.2f} dB" if data is not None and pd.notna(row["psnr"].iloc[0]) else ""
                cells.append(tile(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) if data else None, caption))
            cells.append(tile(clean))
            body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        sections.append(
            f"<h4>{title} ({html.escape(best.label)}, {best.run_id})</h4><table "
            f"class='sheet'><tr>{head}</tr>{''.join(body)}</table>"
        )
    note = (
        ""
        if dataset
        else "<p class='note'>noisy and clean crops not shown: the dataset is not at hand here (pass --data-root)</p>"
    )
    return note + "".join(sections)


def load_pair(dataset: Dataset | None, image_id: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    if dataset is None or image_id not in dataset.ids:
        return None, None
    try:
        noisy, clean = dataset.load(image_id)
    except (DatasetError, ImageError):
        return None, None
    return to_uint8(noisy), None if clean is None else to_uint8(clean)


def tile(image: np.ndarray | None, caption: str = "") -> str:
    if image is None:
        return "–"
    source = data_uri(encode_png(sheet_crop(image)))
    return f"<img src='{source}' width='128' height='128' alt=''><br><small>{html.escape(caption)}</small>"


def sweep_section(sweeps: list[Sweep]) -> tuple[str, str]:
    """(HTML, Markdown) of the dataset's finished sweeps: the best configuration, how its steps were
    chosen, the top trials."""
    parts_html, parts_md = [], []
    for sweep in sweeps:
        selection = sweep.best.get("selection", {})
        best = {k: v for k, v in sweep.best.items() if k not in ("selection", "heldout")}
        objective = OBJECTIVES[selection["objective"]]
        line = (
            f"sweep {sweep.sweep_id}: {len(sweep.trials)} trials by {objective.name}; best {best}: "
            f"{selection['chosen_steps']} steps at {selection['chosen_score']:.4g} {objective.unit} (peak "
            f"{selection['peak_score']:.4g} {objective.unit} at {selection['peak_steps']} steps)"
        )
        if "heldout" in sweep.best:  # validated on images the search did not see (sweep/validation.py)
            line += f"; {heldout_line(sweep.best['heldout'])}"
        top = sweep.trials.sort_values(SCORE, ascending=False).head(8)
        columns = ["trial_id", "p", "steps", "lambda_iqa", "images_done", SCORE, "mean_psnr", "early_stopped"]
        rows = [
            {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in r.items()}
            for r in top[columns].to_dict("records")
        ]
        parts_md.append(f"- {line}")
        parts_html.append(
            f"<p>{html.escape(line)}</p>{html_table(rows) if rows else ''}<img src='{data_uri(sweep.plot)}' alt='sweep "
            f"{html.escape(sweep.sweep_id)}'>"
        )
    return "".join(parts_html), "\n".join(parts_md)


def run_details(runs: list[Run]) -> str:
    """The exact settings, code version and record of every run, folded."""
    items = []
    for run in runs:
        rows = run.rows
        facts = {
            "settings (config.yaml)": run.settings,
            "config_hash": sorted(set(rows["config_hash"].dropna())),
            "code_version": sorted(set(rows["code_version"].dropna())),
            "finished": f"{rows['finished_at'].min()} .. {rows['finished_at'].max()}",
            "devices": sorted(set(rows["device"].dropna())),
            "precision": sorted(set(rows["precision"].dropna())),
            "nodes": int(rows["node_id"].nunique()),
        }
        text = json.dumps(facts, indent=2, default=str)
        items.append(
            f"<details><summary>{html.escape(run.label)} — "
            f"{run.run_id}</summary><pre>{html.escape(text)}</pre></details>"
        )
    return "".join(items)


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}
th{background:#f3f3f3}table.sheet td{text-align:center}.note{color:#666;font-size:13px}
img{max-width:100%}pre{font-size:12px}"""


def build_report(store: OutputStore, runs: list[Run], data_root: str | None) -> tuple[str, str]:
    """(HTML, Markdown) of the runs, grouped by dataset."""
    version, now = code_version(), f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    body, markdown = [], [f"# s2s-sweep report\n\n{now}; outputs {store.uri}; report code {version}\n"]
    for name in dict.fromkeys(run.dataset for run in runs):
        group = [run for run in runs if run.dataset == name]
        try:
            dataset = open_dataset(name, data_root)
        except DatasetError:
            dataset = None
        table = summary_rows(group)
        sweeps_html, sweeps_md = sweep_section(find_sweeps(store, group[0].key))
        paper = PAPER_TEST_SETS.get(name)
        paper_note = (
            f"Paper figures: Self2Self+ (Tables 2 and 3), on {paper[1]}."
            if paper
            else "The paper has no figures for this dataset."
        )
        efficiency = efficiency_rows(group)
        efficiency_md = ["### Efficiency\n", markdown_table(efficiency), "", EFFICIENCY_NOTE, ""] if efficiency else []
        markdown += [f"## {name}\n", markdown_table(table), "", paper_note, "", *efficiency_md]
        markdown += [sweeps_md, ""] if sweeps_md else []
        body.append(
            f"<h2 id='{html.escape(group[0].key)}'>{html.escape(name)}</h2>{html_table(table)}<p "
            f"class='note'>{html.escape(paper_note)} "
            "Intervals: 95% confidence of the mean over images (Student's t).</p>"
            + (
                f"<h3>Efficiency</h3>{html_table(efficiency)}<p class='note'>{html.escape(EFFICIENCY_NOTE)}</p>"
                if efficiency
                else ""
            )
            + f"<h3>Per image</h3><img src='{data_uri(image_plots(group))}' alt='per-image plots'>"
            f"<h3>Contact sheets</h3>{contact_sheets(store, group, dataset)}"
            + (f"<h3>Sweeps</h3>{sweeps_html}" if sweeps_html else "")
            + f"<h3>Runs: settings and code</h3>{run_details(group)}"
        )
    contents = "".join(
        f"<li><a href='#{html.escape(run.key)}'>{html.escape(run.dataset)}</a></li>"
        for run in {r.dataset: r for r in runs}.values()
    )
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>s2s-sweep "
        f"report</title><style>{STYLE}</style></head>"
        f"<body><h1>s2s-sweep report</h1><p class='note'>{now}; outputs {html.escape(store.uri)}; report code "
        f"{version}</p><ul>{contents}</ul>{''.join(body)}</body></html>"
    )
    return page, "\n".join(markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m s2s_sweep.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", help="the runs' output folder or filesystem URI (their --out)")
    parser.add_argument("--datasets", nargs="+", help="only these datasets (names or folder keys; default: all found)")
    parser.add_argument(
        "--data-root",
        help="where the datasets are, for the noisy/clean crops "
        "(default: $S2S_DATA_ROOT, else ~/.cache/s2s-sweep/data)",
    )
    parser.add_argument(
        "--mlflow-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite under OUT)"
    )
    args = parser.parse_args(argv)
    try:
        return report(args)
    except USER_ERRORS as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT


def report(args: argparse.Namespace) -> int:
    session = open_session(
        args.out, args.mlflow_uri, lambda report_id: f"reports/{report_id}", "report.json", None, False
    )
    store = session.store
    runs = find_runs(store, args.datasets)
    if not runs:
        wanted = f" of {', '.join(args.datasets)}" if args.datasets else ""
        raise ConfigError(
            f"{store.uri}: no runs{wanted} with results found (expected DATASET/RUN_ID/run.json and results/)"
        )
    page, markdown = build_report(store, runs, args.data_root)
    store.write_bytes(f"{session.folder}/report.html", page.encode())
    store.write_bytes(f"{session.folder}/report.md", markdown.encode())
    datasets = sorted({run.dataset for run in runs})
    write_record(
        session,
        "report.json",
        {"report_id": session.id, "datasets": datasets, "runs": [f"{run.key}/{run.run_id}" for run in runs]},
    )
    tracker = RunTracker(session.tracking_uri, "s2s-sweep/reports", store)
    tracker.start(
        f"report {' '.join(datasets)} {session.id}",
        {"datasets": ",".join(datasets), "runs": len(runs), "out": store.uri, "code_version": code_version()},
        kind="report",
    )
    tracker.log_artifact_bytes("report.html", page.encode())
    tracker.log_artifact_bytes("report.md", markdown.encode())
    tracker.finish("FINISHED")
    print(markdown)
    print(
        f"report: {store.path(session.folder)}/report.html and report.md ({len(runs)} runs of {len(datasets)} datasets)"
    )
    print(f"MLflow: {tracker.ui_command()}")
    if tracker.behind:
        print(f"tracking behind: {tracker.behind}; the report files are written", file=sys.stderr)
        return EXIT_TRACKING_BEHIND
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
