"""Signed, expiring local URLs for artifacts (the local twin of an S3 presigned URL).

``sig = HMAC-SHA256(secret, "job|artifact|expires")``; the URL carries ``expires`` (Unix
seconds) and ``sig``. Anyone holding the URL may fetch the file until it expires, as
with S3, so the report handler only mints one after checking who is asking.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from pitwall_executor import keys

SECRET_FILE = "api-secret"


def load_secret(data_dir: Path) -> bytes:
    """The server secret in ``data_dir``, created (mode 0600) on first use.

    API replicas that share ``data_dir`` share it, so a URL minted by one verifies on all.
    """
    return keys.load_secret(data_dir, SECRET_FILE)


def _mac(secret: bytes, job_id: str, name: str, expires: int) -> str:
    msg = f"{job_id}|{name}|{expires}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def sign_url(secret: bytes, job_id: str, name: str, *, ttl_s: float,
             now: float | None = None) -> str:
    """The path and query of a URL that serves ``name`` of ``job_id`` for ``ttl_s`` seconds."""
    expires = int((time.time() if now is None else now) + ttl_s)
    query = urlencode({"expires": expires, "sig": _mac(secret, job_id, name, expires)})
    return f"/v1/artifacts/{quote(job_id)}/{quote(name)}?{query}"


def verify(secret: bytes, job_id: str, name: str, expires: str, sig: str,
           *, now: float | None = None) -> str | None:
    """None if the signature is valid and unexpired, else why not."""
    try:
        when = int(expires)
    except ValueError:
        return "the link is malformed; ask the API for a new one"
    if not hmac.compare_digest(_mac(secret, job_id, name, when), sig):
        return "the link's signature is invalid; ask the API for a new one"
    if (time.time() if now is None else now) > when:
        return "the link has expired; ask GET /v1/backtests/{id}/report for a new one"
    return None
