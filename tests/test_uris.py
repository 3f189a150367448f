from s2s_sweep.uris import redact


def test_user_info_and_secret_parameters_are_removed_and_the_rest_kept():
    assert redact("s3://AKIA123:s3cr3t/x@bucket/runs?secret_key=abc&region=eu-west-1") == "s3://***@bucket/runs?secret_key=***&region=eu-west-1"
    assert redact("MLflow at http://alice:pa55@mlflow:5000 failed (API request to http://alice:pa55@mlflow:5000/api failed)") == (
        "MLflow at http://***@mlflow:5000 failed (API request to http://***@mlflow:5000/api failed)"
    )
    assert redact("gs://b/p?access_token=t0k&session_token=s&x=1") == "gs://b/p?access_token=***&session_token=***&x=1"
    assert redact("http://127.0.0.1:5000 and /data/scans/a.png") == "http://127.0.0.1:5000 and /data/scans/a.png"
