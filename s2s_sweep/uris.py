"""Credentials out of everything the project records, prints or pickles: the one place a
secret is removed from a URI.

    redact("s3://KEY:SECRET@bucket/runs?secret_key=abc&region=eu")  # 's3://***@bucket/runs?secret_key=***&region=eu'
    adopt_credentials("s3://KEY:SECRET@bucket/runs", "--out")       # 's3://bucket/runs', keys in a private profile

`redact` works on any text (an error message quoting a URL included): user info before `@`
in a URI and the values of secret-looking query parameters are replaced by ***.
`adopt_credentials` moves the credentials of an S3 output URI or an MLflow server URI to where
those libraries' own credential chains read them, so the URI every other part sees (and Tune
pickles, MLflow prints) holds none. Other schemes keep their credentials (they still work)
and are redacted wherever the project writes them.
"""

import atexit
import os
import re
import sys
import tempfile
from urllib.parse import unquote

# user:password (a cloud secret may hold an unescaped /) or a bare user/token, up to its @
USER_INFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://)(?:[^/@\s:]*:[^@\s]*|[^/@\s]+)@")
SECRET_PARAMETER = re.compile(
    r"([?&;](?:[\w-]*(?:secret|token|password|passwd|key|credential|signature)[\w-]*)=)[^&;\s#'\"]+", re.IGNORECASE
)

S3_PROFILE = "s2s-sweep"
S3_QUERY_KEYS = {
    "access_key": "aws_access_key_id",
    "secret_key": "aws_secret_access_key",
    "session_token": "aws_session_token",
}
S3_VARIABLES = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_SECURITY_TOKEN": "aws_session_token",
}

warned: set[str] = set()  # options already warned about in this process
profiles: list[str] = []  # the private credentials files this process wrote


def redact(text: str) -> str:
    """`text` with URI user info and secret query values replaced by ***."""
    return SECRET_PARAMETER.sub(r"\1***", USER_INFO.sub(r"\1***@", text))


def adopt_credentials(uri: str, option: str) -> str:
    """`uri` without the credentials it carries. An MLflow server's user and password go to
    MLFLOW_TRACKING_USERNAME / PASSWORD; S3 keys go to a private credentials file (see
    `use_private_s3_profile`). Warns once per option that the command line showed them."""
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return uri
    scheme = scheme.lower()
    location, question, query = rest.partition("?")
    user_info, at, host_path = location.rpartition("@") if ":" in location.rpartition("@")[0] else ("", "", location)
    user, _, password = map(unquote, user_info.partition(":"))
    s3_keys, kept = {}, []
    for parameter in query.split("&") if question else []:
        name, _, value = parameter.partition("=")
        if scheme == "s3" and name in S3_QUERY_KEYS:
            s3_keys[S3_QUERY_KEYS[name]] = unquote(value)
        else:
            kept.append(parameter)
    if scheme == "s3":
        if at:
            s3_keys.update(aws_access_key_id=user, aws_secret_access_key=password)
        use_private_s3_profile(s3_keys)
        moved = bool(at or s3_keys)
    elif scheme in ("http", "https") and at:
        os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
        moved = True
    else:
        host_path, moved = location, False  # a library that takes no other way: kept (and redacted wherever shown)
    clean = f"{scheme}://{host_path}" + (f"?{'&'.join(kept)}" if kept else "")
    if redact(uri) != uri and option not in warned:
        warned.add(option)
        print(
            f"warning: {option} {redact(uri)} carries credentials, which the process list, shell history and `ray job "
            "list` show; "
            f"they were {'moved out of the URI' if moved else 'kept in the URI (redacted in every record)'}. Prefer "
            "the library's own chain: "
            "AWS_* variables, an instance or pod role, a KubeRay secretKeyRef, MLFLOW_TRACKING_USERNAME/PASSWORD "
            "(README: Outputs on object storage)",
            file=sys.stderr,
            flush=True,
        )
    return clean if moved else uri


def use_private_s3_profile(keys: dict[str, str]) -> None:
    """Hand S3 keys (from a URI, else from the AWS_* variables) to the AWS SDK inside pyarrow
    through a credentials file readable by this user only (AWS_SHARED_CREDENTIALS_FILE +
    AWS_PROFILE), and take the AWS_* key variables out of this process's environment: Ray Tune
    copies those into every trial's runtime env, which Ray logs in plain text."""
    from_environment = {
        key: os.environ.pop(variable) for variable, key in S3_VARIABLES.items() if variable in os.environ
    }
    keys = keys or from_environment
    if not keys:
        return  # roles, or a profile the user configured: the SDK's own chain
    handle, path = tempfile.mkstemp(prefix="s2s-sweep-aws-", suffix=".ini")  # mode 0600
    with os.fdopen(handle, "w") as stream:
        stream.write(f"[{S3_PROFILE}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items() if value))
    profiles.append(path)
    os.environ.update(AWS_SHARED_CREDENTIALS_FILE=path, AWS_PROFILE=S3_PROFILE)


@atexit.register
def remove_private_profiles() -> None:
    """Delete the credentials files this process wrote (at exit; call it before an os._exit)."""
    while profiles:
        path = profiles.pop()
        if os.path.exists(path):
            os.unlink(path)
