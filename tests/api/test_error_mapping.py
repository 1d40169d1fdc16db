"""The one error mapping: a platform outage is a 503 to retry, never a 400 to fix."""

from __future__ import annotations

import sqlalchemy as sa

from pitwall.errors import SandboxError, UnknownSymbolError
from pitwall_executor.api.errors import to_api_error
from pitwall_executor.storage.objectstore import ObjectStoreError


def test_an_s3_lake_outage_at_submission_is_a_503_with_retry_after() -> None:
    # A lake that cannot be read is a DataError too; it must not answer "bad request".
    err = to_api_error(ObjectStoreError("s3://lake/sample: still failing after 6 attempts"))
    assert err is not None and err.status == 503 and err.retry_after == 2
    assert err.code == "platform_unavailable"
    assert err.message.startswith("s3://lake/sample: still failing after 6 attempts.")
    assert "retry in a few seconds" in err.message
    sandbox = to_api_error(SandboxError("runsc is missing"))
    assert sandbox is not None and sandbox.status == 503


def test_bad_input_stays_a_400_and_a_database_outage_a_503() -> None:
    bad = to_api_error(UnknownSymbolError("symbol 'APPL' is not in dataset sample@v1"))
    assert bad is not None and (bad.status, bad.fields[0].field) == (400, "spec.universe")
    down = to_api_error(sa.exc.OperationalError("SELECT 1", {}, ConnectionError("refused")))
    assert down is not None and (down.status, down.code) == (503, "database_unavailable")
    assert to_api_error(RuntimeError("a bug")) is None  # answered 500
