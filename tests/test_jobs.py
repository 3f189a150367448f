"""The Ray job and cluster specs in jobs/ parse, validate against Ray's own schemas and name real flags."""

import shlex
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

from s2s_sweep.run import parse_args
from s2s_sweep.uris import redact

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_runtime_env_is_a_valid_ray_runtime_env():
    content = yaml.safe_load((JOBS / "runtime_env.yaml").read_text())
    RuntimeEnv(**content)  # raises on unknown fields or wrong types
    assert content["working_dir"] == "."
    assert {"TORCH_HOME", "MLFLOW_TRACKING_URI", "S2S_DATA_ROOT"} <= set(content["env_vars"])


def test_rayjob_manifest_runs_the_runner_on_gpu_workers():
    job = yaml.safe_load((JOBS / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:3] == ["python", "-m", "s2s_sweep.run"]
    args = parse_args(command[3:])
    assert args.dataset == "sidd" and args.gpus_per_image == 0.5 and args.out.startswith("s3://")
    assert redact(job["spec"]["entrypoint"]) == job["spec"]["entrypoint"] and args.fallback.startswith("/mnt/shared/")
    RuntimeEnv(**yaml.safe_load(job["spec"]["runtimeEnvYAML"]))
    (workers,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    (head,) = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    secrets = {item["name"] for item in head["env"] if "secretKeyRef" in item.get("valueFrom", {})}
    assert secrets == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    }
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        job["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True
        and workers["maxReplicas"] > workers["minReplicas"]
    )


def test_cluster_launcher_config_validates_against_rays_schema():
    config = yaml.safe_load((JOBS / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # Ray's defaults and JSON schema, as `ray up` does
    assert config["head_node_type"] in config["available_node_types"]
    assert any("pip install -e" in command for command in config["setup_commands"])
