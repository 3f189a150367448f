"""Credentials out of what the project prints: the one place a secret is removed from a URI.

    redact("s3://KEY:SECRET@bucket/runs?secret_key=abc&region=eu")  # 's3://***@bucket/runs?secret_key=***&region=eu'

Works on any text (an error message quoting a URL included): user info before `@` in a
URI and the values of secret-looking query parameters are replaced by ***.
"""

import re

# user:password (a cloud secret may hold an unescaped /) or a bare user/token, up to its @
USER_INFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://)(?:[^/@\s:]*:[^@\s]*|[^/@\s]+)@")
SECRET_PARAMETER = re.compile(r"([?&;](?:[\w-]*(?:secret|token|password|passwd|key|credential|signature)[\w-]*)=)[^&;\s#'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with URI user info and secret query values replaced by ***."""
    return SECRET_PARAMETER.sub(r"\1***", USER_INFO.sub(r"\1***@", text))
