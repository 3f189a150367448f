"""The drivers load only what they use: a run's driver plans, records and submits tasks but never
trains (with torch, importing the run CLI took 4.6 CPU-s and 653 MB peak RSS here; without, 1.8 s
and 184 MB, in every driver and CLI process), and the report is an offline reader (no Ray Tune,
no Optuna)."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "pyiqa", "ray.tune", "optuna")


def loaded_after_import(module: str) -> list[str]:
    probe = f"import sys, json, {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("s2s_sweep.run", []),  # `--sweep` loads the sweep's driver when asked
        ("s2s_sweep.sweep.driver", ["ray.tune", "optuna"]),
        ("s2s_sweep.report", []),
        ("s2s_sweep.export", []),
    ],
)
def test_a_driver_imports_no_training_code(module, allowed):
    assert loaded_after_import(module) == allowed
