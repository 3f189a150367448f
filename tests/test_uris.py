import os
from pathlib import Path
from unittest.mock import patch

import pytest

from s2s_sweep import uris
from s2s_sweep.uris import adopt_credentials, redact


def test_user_info_and_secret_parameters_are_removed_and_the_rest_kept():
    assert (
        redact("s3://AKIA123:s3cr3t/x@bucket/runs?secret_key=abc&region=eu-west-1")
        == "s3://***@bucket/runs?secret_key=***&region=eu-west-1"
    )
    assert redact(
        "MLflow at http://alice:pa55@mlflow:5000 failed (API request to http://alice:pa55@mlflow:5000/api failed)"
    ) == ("MLflow at http://***@mlflow:5000 failed (API request to http://***@mlflow:5000/api failed)")
    assert redact("gs://b/p?access_token=t0k&session_token=s&x=1") == "gs://b/p?access_token=***&session_token=***&x=1"
    assert redact("http://127.0.0.1:5000 and /data/scans/a.png") == "http://127.0.0.1:5000 and /data/scans/a.png"


@pytest.fixture(autouse=True)
def own_environment(monkeypatch):
    """adopt_credentials changes os.environ and warns once per process: both restored after each test."""
    monkeypatch.setattr(uris, "warned", set())
    with patch.dict(os.environ):
        for name in (
            *uris.S3_VARIABLES,
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_PROFILE",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        ):
            os.environ.pop(name, None)
        yield


def test_s3_and_mlflow_credentials_move_out_of_the_uri_to_where_their_libraries_read_them(capsys):
    out = "s3://AKIA1:se/cr%2Bt@bkt/runs?endpoint_override=127.0.0.1:9000&session_token=T0K&scheme=http"
    assert adopt_credentials(out, "--out") == "s3://bkt/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    profile = Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"])
    assert os.environ["AWS_PROFILE"] == "s2s-sweep" and profile.stat().st_mode & 0o077 == 0  # this user only
    assert (
        profile.read_text()
        == "[s2s-sweep]\naws_session_token = T0K\naws_access_key_id = AKIA1\naws_secret_access_key = se/cr+t\n"
    )
    uris.remove_private_profiles()  # at exit
    assert not profile.exists()
    assert adopt_credentials("https://alice:pa55@mlflow.lab:5000", "--mlflow-uri") == "https://mlflow.lab:5000"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", "pa55")
    warnings = capsys.readouterr().err
    assert warnings.count("warning:") == 2 and "process list" in warnings
    assert not any(secret in warnings for secret in ("se/cr", "T0K", "pa55"))


def test_aws_key_variables_leave_the_environment_which_ray_tune_copies_into_logged_runtime_envs(capsys):
    os.environ.update(AWS_ACCESS_KEY_ID="AKIA2", AWS_SECRET_ACCESS_KEY="env-secret")
    assert adopt_credentials("s3://bkt/runs?region=eu-west-1", "--out") == "s3://bkt/runs?region=eu-west-1"
    assert (
        "AWS_SECRET_ACCESS_KEY" not in os.environ
        and "env-secret" in Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).read_text()
    )
    assert capsys.readouterr().err == ""  # the ecosystem's way: no warning


def test_a_uri_without_credentials_is_untouched_and_other_schemes_keep_theirs(capsys):
    assert (
        adopt_credentials("s3://bkt/path@v2/runs", "--out") == "s3://bkt/path@v2/runs"
    )  # an @ in a key is no user info
    assert (
        adopt_credentials("postgresql://u:pw@db/mlflow", "--mlflow-uri") == "postgresql://u:pw@db/mlflow"
    )  # still works
    assert "kept in the URI" in capsys.readouterr().err
