"""Which errors are the strategy's and which the platform's, and how an attempt ends on
each: a strategy error fails the job at once, an infrastructure error is an outage the
worker retries. Existing ``except`` clauses still catch what they caught."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pitwall.errors import (
    BundleError,
    DataError,
    EmptyRangeError,
    InfrastructureError,
    PitwallError,
    SandboxError,
    StrategyError,
    StrategyOutputError,
    UnknownDatasetError,
    UnknownSymbolError,
)
from pitwall.models import BacktestSpec, JobStatus
from pitwall_executor.config import load_config
from pitwall_executor.datalake.cache import CacheFullError, FileCache
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.execution.attempt import ended_by, load_slice
from pitwall_executor.stack import Stack
from pitwall_executor.storage.artifacts import (
    ArtifactError,
    ArtifactMissingError,
    ArtifactUnavailableError,
)
from pitwall_executor.storage.objectstore import (
    ChecksumMismatchError,
    ObjectNotFoundError,
    ObjectStoreError,
)

STRATEGY = [BundleError, UnknownDatasetError, UnknownSymbolError, EmptyRangeError,
            StrategyOutputError]
INFRASTRUCTURE = [ObjectStoreError, ObjectNotFoundError, ChecksumMismatchError, CacheFullError,
                  SandboxError, ArtifactError, ArtifactMissingError, ArtifactUnavailableError]


@pytest.mark.parametrize("cls", STRATEGY)
def test_a_strategy_error_fails_the_attempt_at_once(cls: type[PitwallError]) -> None:
    assert issubclass(cls, StrategyError) and not issubclass(cls, InfrastructureError)
    ended = ended_by(cls("symbol 'APPL' is not in the dataset; did you mean 'AAPL'?"))
    assert ended.status is JobStatus.FAILED and ended.outage is None
    assert ended.reason is not None and ended.reason.endswith("did you mean 'AAPL'?")


@pytest.mark.parametrize("cls", INFRASTRUCTURE)
def test_an_infrastructure_error_is_an_outage_naming_what_must_come_back(
        cls: type[PitwallError]) -> None:
    assert issubclass(cls, InfrastructureError) and not issubclass(cls, StrategyError)
    ended = ended_by(cls("get of sample/data/x.parquet on s3://lake still failing"))
    assert ended.outage is not None
    assert ended.outage.what == "get of sample/data/x.parquet on s3://lake still failing"
    assert ended.outage.rerun_when != InfrastructureError.rerun_when  # each names its service


def test_invalid_output_says_so_and_the_old_catches_still_hold() -> None:
    assert ended_by(StrategyOutputError("weights are NaN")).reason == \
        "invalid strategy output: weights are NaN"
    # Callers that catch DataError (the API's 400, the CLI) still catch both kinds of it.
    for cls in (UnknownDatasetError, UnknownSymbolError, EmptyRangeError, ObjectStoreError,
                ChecksumMismatchError, CacheFullError):
        assert issubclass(cls, DataError)
    assert issubclass(ArtifactMissingError, LookupError)
    assert not issubclass(DataError, StrategyError | InfrastructureError)  # a grouping only


def test_a_lake_copy_that_fails_verification_is_the_platforms_fault(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", 1 << 20)
    with pytest.raises(DataError, match="failed verification twice") as caught:
        cache.get("0" * 64, 4, lambda dest: dest.write_bytes(b"evil"), name="march.parquet")
    assert isinstance(caught.value, InfrastructureError)
    assert ended_by(caught.value).outage is not None


def test_a_lake_file_gone_after_submission_is_an_outage_not_a_strategy_error(
        tmp_path: Path) -> None:
    snap = generate_dataset(Catalog(tmp_path / "lake"), "sample", symbols=["AAPL"],
                            start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 8), seed=3)
    stack = Stack.from_config(load_config(environ={}, data_dir=tmp_path, sandbox="gvisor"))
    spec = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 3, 4),
                        end=dt.date(2024, 3, 8))
    assert load_slice(stack, spec)[0].height == 5 * 390
    for entry in snap.files:
        (tmp_path / "lake" / "sample" / entry.path).unlink()
    with pytest.raises(ObjectStoreError, match="the lake could not be read") as caught:
        load_slice(stack, spec)
    assert "sample@v1" in str(caught.value)
    outage = ended_by(caught.value).outage
    assert outage is not None and outage.rerun_when == "the object store is reachable again"
    with pytest.raises(UnknownSymbolError) as unknown:  # the researcher's input: no retry
        load_slice(stack, spec.model_copy(update={"universe": ["APPL"]}))
    assert ended_by(unknown.value).outage is None
    stack.store.close()
