"""Baselines on the runner and the report of a store, on real tables made by short runs (real Ray, Parquet, MLflow)."""

import html.parser
import json

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import FLOW_PRECISION, run_in_process

from model.config import S2SConfig
from s2s_sweep.datasets import open_dataset
from s2s_sweep.methods import Method
from s2s_sweep.report import Run, efficiency_rows, find_sweeps, main, protocol_notes, summary_rows, sweep_section
from s2s_sweep.runner import RunOptions, run_dataset
from s2s_sweep.store import OutputStore

SHORT = S2SConfig(steps=10, passes=2, lambda_iqa=0.0, precision=FLOW_PRECISION)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, local_ray):
    """A store with an S2S+ run and two baseline runs on the same 3 demo images, and a ZS-N2N run
    (2000 iterations, as its paper) of the first."""
    out = tmp_path_factory.mktemp("store")
    dataset = open_dataset("demo").select(limit=3)
    for method in ("s2s+", "nlm", "cbm3d"):
        run_dataset(dataset, Method(method, SHORT), RunOptions(out=str(out), flush_seconds=0))
    run_dataset(dataset.select(limit=1), Method("zsn2n", SHORT), RunOptions(out=str(out), flush_seconds=0))
    return out


@pytest.mark.slow
def test_a_baseline_runs_like_s2s_recorded_with_its_sigma_and_resumes_only_as_itself(local_ray, tmp_path):
    done = run_in_process("s2s_sweep.run", "demo", "--method", "wavelet", "--limit", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "demo with wavelet, 2 of 2 images to do" in done.stdout and "[2/2]" in done.stdout
    (run_dir,) = (tmp_path / "demo").iterdir()
    table = pd.read_parquet(run_dir / "results")
    assert set(table["method"]) == {"wavelet"} and set(table["status"]) == {"ok"} and table["p"].isna().all()
    assert set(table["sigma_source"]) == {"dataset"} and set(table["noise_sigma"]) == {25.0}  # the demo's true σ
    assert (table["psnr"] > table["noisy_psnr"] + 2).all()
    assert json.loads(table["settings"].iloc[0]) == {
        "method": "wavelet",
        "quantize": "round",
        "threshold": "BayesShrink",
        "mode": "soft",
        "rescale_sigma": True,
    }

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("s2s-sweep/demo").experiment_id])
    assert run.info.run_name == f"demo wavelet {run_dir.name}" and run.data.params["method"] == "wavelet"
    assert run.data.metrics["final_mean_psnr"] == pytest.approx(table["psnr"].mean())

    other = run_in_process(  # refused before any work: no second interpreter needed
        "s2s_sweep.run", "demo", "--method", "nlm", "--limit", "2", "--out", str(tmp_path), "--resume", run_dir.name
    )
    assert (
        other.returncode == 2
        and "differs from the requested method or configuration" in other.stderr.strip().splitlines()[-1]
    )
    again = run_in_process(
        "s2s_sweep.run", "demo", "--set", "steps=5", "--out", str(tmp_path), "--resume", run_dir.name
    )
    assert again.returncode == 2 and again.stderr.strip().endswith(
        "--method wavelet takes only quantize= and memory_mb="
    )  # it kept its own method


class Page(html.parser.HTMLParser):
    """What the test reads from the report: tables as rows of cell texts, and every image and link address."""

    def __init__(self):
        super().__init__()
        self.tables, self.sources, self.links, self.cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag == "img":
            self.sources.append(attrs["src"])
        elif tag in ("a", "link", "script"):
            self.links.append(attrs.get("href") or attrs.get("src") or tag)

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell.strip())
            self.cell = None


@pytest.mark.slow
def test_the_report_compares_the_methods_in_one_offline_html_file_and_markdown_logged_to_mlflow(outputs, capsys):
    assert main([str(outputs)]) == 0
    (folder,) = (outputs / "reports").iterdir()
    page = Page()
    page.feed((folder / "report.html").read_text())
    header, *rows = page.tables[0]
    assert (
        header[:4] == ["method", "run", "images (failed)", "PSNR dB, 95% CI"]
        and "PSNR on the 1 shared images" in header  # ZS-N2N ran the first only
    )
    labels = ["S2S+ p=0.4 steps=10 passes=2 λ=0", "CBM3D", "NL-means", "ZS-N2N seed=0"]
    assert [row[0] for row in rows] == labels and header[2] == "images (failed)" and rows[3][2] == "1 (0)"
    efficiency = next(table for table in page.tables if table[0][:3] == ["method", "run", "source"])
    measured = {row[0]: dict(zip(efficiency[0], row)) for row in efficiency[1:] if row[2] == "reproduced here"}
    assert list(measured) == labels and measured["ZS-N2N seed=0"]["parameters"] == "22,275 ★"
    assert measured["S2S+ p=0.4 steps=10 passes=2 λ=0"]["parameters"] == "1,253,571"
    assert measured["CBM3D"]["device"] == "cpu" and "★" in "".join(
        row["seconds per image"] for row in measured.values()
    )
    runs = {row[0]: row for row in rows}
    results = pd.read_parquet(outputs / "demo" / runs["CBM3D"][1] / "results")
    psnr = results["psnr"]
    half = 4.302653 * psnr.std() / len(psnr) ** 0.5  # Student's t, 2 degrees of freedom
    assert runs["CBM3D"][2] == "3 (0)" and runs["CBM3D"][3] == f"{psnr.mean():.2f} ± {half:.2f}"
    sheet = next(table for table in page.tables if table[0][:2] == ["image", "noisy"])
    assert (
        len(sheet) == 4 and sheet[0][-1] == "clean" and all(cell.endswith("dB") for cell in sheet[1][2:5])
    )  # ZS-N2N: "–" where it did not run
    assert len(page.sources) >= 1 + 3 * 5 and all(
        src.startswith("data:image/png;base64,") for src in page.sources
    )  # inline: opens offline
    assert page.links == ["#demo"]  # no script, no stylesheet, no address outside the file
    markdown = (folder / "report.md").read_text()
    assert "| CBM3D | " + runs["CBM3D"][1] in markdown and "## demo" in markdown
    assert "| CBM3D |" in capsys.readouterr().out

    client = mlflow.MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("s2s-sweep/reports").experiment_id])
    assert run.data.tags["s2s_sweep.kind"] == "report" and run.info.status == "FINISHED"
    assert {artifact.path for artifact in client.list_artifacts(run.info.run_id)} == {"report.html", "report.md"}

    assert main([str(outputs), "--datasets", "polyu"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("no runs of polyu with results found (expected DATASET/RUN_ID/run.json and results/)")
    )


def test_the_paper_column_says_how_a_short_run_differs_from_the_paper():
    rows = pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "status": ["ok", "ok"],
            "psnr": [27.0, 28.0],
            "ssim": [0.8, 0.9],
            "noisy_psnr": [20.0, 20.5],
            "crop": [0, 256],
            "precision": ["bf16", "bf16"],
            "sigma_source": [None, None],
        }
    )
    s2s = Run(
        "cbsd68-25",
        "cbsd68-25",
        "r",
        {"method": "s2s+", "p": 0.4, "steps": 300, "passes": 50, "lambda_iqa": 0.0, "quantize": "round"},
        rows,
    )
    assert protocol_notes(s2s) == [
        "2 images; the paper tests the 68 images",
        "steps 300 (paper 4000)",
        "passes 50 (paper 500)",
        "λ_IQA 0 (paper 2e-08)",
        "1 of 2 images trained on crops",
        "bf16 arithmetic",
        "output rounded to 8 bits (the authors' code truncates)",
    ]
    (row,) = summary_rows([s2s])
    assert (
        row["paper PSNR / SSIM (SSIM protocol unknown)"] == "28.71 / 0.9076"
        and row["PSNR dB, 95% CI"] == "27.50 ± 6.35"
    )
    assert row["SSIM (3-D window, MATLAB), 95% CI"] == "–"  # rows recorded before the column existed
    other = Run("cbsd68-25", "cbsd68-25", "r2", s2s.settings, rows.assign(image_id=["a", "c"], psnr=[30.0, 1.0]))
    first, second = summary_rows([s2s, other])
    assert (
        first["PSNR on the 1 shared images"] == "27.00" and second["PSNR on the 1 shared images"] == "30.00"
    )  # image "a" only
    polyu = Run("polyu", "polyu", "r", {"method": "cbm3d", "quantize": "floor"}, rows.assign(sigma_source="estimated"))
    assert protocol_notes(polyu) == [
        "2 images; the paper tests 30 of the 100 crops, which the paper does not name",
        "σ estimated from each image",
        "CBM3D of the bm3d package (profile np); the paper does not say which",
    ]
    assert (
        summary_rows([Run("demo", "demo", "r", polyu.settings, rows)])[0]["paper PSNR / SSIM (SSIM protocol unknown)"]
        == "–"
    )
    warm = Run(
        "cbsd68-25",
        "cbsd68-25",
        "w",
        {**s2s.settings, "init": "warm"},
        rows.assign(steps=150, init_source="run w seed.pt, 300 steps on 0000"),
    )
    assert (
        "warm starts from run w seed.pt, 300 steps on 0000, 150 steps per image; the paper trains each image from "
        "scratch" in protocol_notes(warm)
    )
    steadied = Run("cbsd68-25", "cbsd68-25", "s", {**s2s.settings, "ema_decay": 0.99, "lr_decay": 0.3}, rows)
    assert protocol_notes(steadied)[-3:-1] == [
        "read out from a moving average of the weights (decay 0.99)",
        "learning rate decayed over the last 30% of the steps",
    ]


def test_the_efficiency_table_gives_seconds_memory_and_parameters_per_method_and_marks_the_best():
    def rows(train, infer, device, memory, parameters):
        return pd.DataFrame(
            {
                "image_id": ["a", "b"],
                "status": ["ok", "ok"],
                "train_seconds": train,
                "inference_seconds": infer,
                "height": [500, 1000],
                "width": [1000, 1000],
                "device": device,
                "peak_memory_mb": memory,
                "parameters": parameters,
            }
        )

    s2s = Run(
        "demo",
        "demo",
        "r1",
        {"method": "s2s+", "p": 0.4, "steps": 10, "passes": 2, "lambda_iqa": 0.0},
        rows([100.0, 200.0], [10.0, 20.0], ["cuda:0", "cuda:0"], [900.0, 1800.0], [1253571, 1253571]),
    )
    zsn2n = Run(
        "demo",
        "demo",
        "r2",
        {"method": "zsn2n", "seed": 0, "quantize": "round"},
        rows([10.0, 20.0], [0.5, 0.5], ["cpu", "cpu"], [700.0, 1400.0], [22275, 22275]),
    )
    cbm3d = Run(
        "demo",
        "demo",
        "r3",
        {"method": "cbm3d", "quantize": "round"},
        rows([0.0, 0.0], [3.0, 6.0], ["cpu", "cpu"], [1000.0, 2000.0], [None, None]),
    )
    table = {row["run"] or row["source"]: row for row in efficiency_rows([s2s, zsn2n, cbm3d])}
    assert table["r1"]["seconds per image"] == "165.0" and table["r1"]["seconds per megapixel"] == "220.0"
    assert table["r1"]["device"] == "cuda:0" and table["r1"]["source"] == "reproduced here"
    assert table["r2"]["seconds per image"] == "15.5" and table["r2"]["parameters"] == "22,275 ★"
    assert table["r3"]["seconds per image"] == "4.5 ★" and table["r3"]["seconds per megapixel"] == "6.0 ★"
    assert table["r3"]["parameters"] == "–" and table["r2"]["peak memory MB"] == "1,400 ★"
    quoted = table["quoted: Mansour & Heckel 2023"]
    assert quoted["method"] == "ZS-N2N" and quoted["parameters"] == "–"


def test_a_sweep_recorded_before_objectives_is_reported_as_the_psnr_sweep_it_was(tmp_path):
    folder = tmp_path / "demo" / "sweeps" / "old"
    (folder / "trials" / "dataset=demo").mkdir(parents=True)
    (folder / "curves" / "dataset=demo").mkdir(parents=True)
    trial = {"trial_id": "t1", "p": 0.4, "steps": 8, "lambda_iqa": 0.0, "images_done": 2, "early_stopped": False}
    pd.DataFrame([{**trial, "status": "ok", "mean_psnr": 30.5, "mean_ssim": 0.9}]).to_parquet(
        folder / "trials" / "dataset=demo" / "trials.parquet"
    )
    curve = [
        {"sweep_id": "old", "trial_id": "t1", "image_id": "x", "metric": "psnr", "steps": s, "value": v}
        for s, v in ((4, 30.0), (8, 30.5))
    ]
    pd.DataFrame(curve).to_parquet(folder / "curves" / "dataset=demo" / "curves.parquet")
    selection = {
        "trial_id": "t1",
        "within_db": 0.05,
        "peak_steps": 8,
        "peak_mean_psnr": 30.5,
        "chosen_steps": 8,
        "chosen_mean_psnr": 30.5,
        "training_saved": 0.0,
    }
    (folder / "best_config.yaml").write_text(yaml.safe_dump({"p": 0.4, "steps": 8, "selection": selection}))
    (sweep,) = find_sweeps(OutputStore(str(tmp_path)), "demo")
    assert sweep.best["selection"]["objective"] == "psnr" and sweep.best["selection"]["chosen_score"] == 30.5
    html_part, markdown = sweep_section([sweep])
    assert "sweep old: 1 trials by psnr" in markdown and "8 steps at 30.5 dB" in markdown and "<img" in html_part


def test_the_sweep_section_says_whether_the_best_was_shown_on_held_out_images(tmp_path):
    folder = tmp_path / "demo" / "sweeps" / "new"
    for name in ("trials", "curves"):
        (folder / name / "dataset=demo").mkdir(parents=True)
    trial = {"trial_id": "t1", "p": 0.4, "steps": 8, "lambda_iqa": 0.0, "images_done": 2, "early_stopped": False}
    pd.DataFrame([{**trial, "status": "ok", "objective": "psnr", "score": 30.5, "mean_psnr": 30.5}]).to_parquet(
        folder / "trials" / "dataset=demo" / "trials.parquet"
    )
    curve = [
        {"sweep_id": "new", "trial_id": "t1", "image_id": "x", "metric": "psnr", "steps": s, "value": v}
        for s, v in ((4, 30.0), (8, 30.5))
    ]
    pd.DataFrame(curve).to_parquet(folder / "curves" / "dataset=demo" / "curves.parquet")
    selection = {"objective": "psnr", "trial_id": "t1", "within": 0.05, "peak_steps": 8, "peak_score": 30.5}
    selection |= {"chosen_steps": 8, "chosen_score": 30.5, "training_saved": 0.0}
    heldout = {"images": 4, "metric": "psnr", "gain_db": -0.3, "ci95_db": [-0.9, 0.3], "shown": False}
    heldout["why"] = "the interval's lower end -0.90 dB is not above -0.1 dB (the rule)"
    best = {"p": 0.4, "steps": 8, "selection": selection, "heldout": heldout}
    (folder / "best_config.yaml").write_text(yaml.safe_dump(best))
    _, markdown = sweep_section(find_sweeps(OutputStore(str(tmp_path)), "demo"))
    assert "best {'p': 0.4, 'steps': 8}" in markdown  # the records are not settings
    assert "the paper's configuration: -0.30 dB [-0.90, +0.30] (psnr, 4 images the search did not see)" in markdown
    assert "not shown at least as good (the interval's lower end -0.90 dB" in markdown
