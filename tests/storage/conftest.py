"""The S3-compatible test server (moto on loopback, behind a fault-injecting proxy)."""

from tests.storage.s3_testserver import (  # noqa: F401
    _proxy_server,
    bucket,
    moto_endpoint,
    proxy,
    proxy_url,
    raw_s3,
)
