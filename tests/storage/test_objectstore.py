"""The object stores: a local folder, and S3 against a real S3-compatible server (moto) on
loopback, reached through a fault-injecting proxy (real sockets, no mock objects)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.storage.s3_testserver import Fault, FaultProxy

from pitwall.errors import DataError
from pitwall_executor.storage import (
    ChecksumMismatchError,
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    open_store,
)
from pitwall_executor.storage.s3 import S3ObjectStore, S3Tuning

MIB = 1 << 20
FAST_RETRY = S3Tuning(backoff_base_s=0.001, backoff_cap_s=0.01)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def s3(bucket: str, proxy_url: str) -> Iterator[S3ObjectStore]:
    store = S3ObjectStore.from_url(f"s3://{bucket}/lake", endpoint_url=proxy_url,
                                   tuning=FAST_RETRY)
    yield store
    store.close()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    s3_store: S3ObjectStore = request.getfixturevalue("s3")
    return s3_store


def test_round_trip_listing_and_ranges(store: ObjectStore) -> None:
    data = os.urandom(100_000)
    assert store.put("ds/data/a.parquet", data) == sha(data)
    store.put("ds/_versions/00000001.json", b"{}")
    assert store.get("ds/data/a.parquet", sha256=sha(data)) == data
    assert store.get_range("ds/data/a.parquet", 10, 20) == data[10:20]
    assert store.get_range("ds/data/a.parquet", 99_990, 200_000) == data[99_990:]
    assert store.get_range("ds/data/a.parquet", 500_000, 500_010) == b""
    assert store.size("ds/data/a.parquet") == 100_000
    assert store.exists("ds/data/a.parquet") and not store.exists("ds/data/b.parquet")
    assert store.list_keys("ds/") == ["ds/_versions/00000001.json", "ds/data/a.parquet"]
    assert store.list_prefixes("") == ["ds/"]
    assert store.list_prefixes("ds/") == ["ds/_versions/", "ds/data/"]
    with pytest.raises(ObjectNotFoundError):
        store.get("ds/data/missing.parquet")
    store.put("empty", b"")
    assert store.get("empty", sha256=sha(b"")) == b""


def test_a_source_that_does_not_match_its_hash_is_not_uploaded(store: ObjectStore) -> None:
    with pytest.raises(ChecksumMismatchError):
        store.put("ds/data/x", b"abc", sha256=sha(b"abd"))
    assert not store.exists("ds/data/x")


def test_keys_must_be_clean_relative_paths(store: ObjectStore) -> None:
    for bad in ("../etc/passwd", "/abs", "a/../../b", ""):
        with pytest.raises(DataError, match="not a clean relative path"):
            store.get(bad)


def open_s3(bucket: str, endpoint: str, **tuning: Any) -> contextlib.closing[S3ObjectStore]:
    store = S3ObjectStore.from_url(f"s3://{bucket}/p", endpoint_url=endpoint,
                                   tuning=dataclasses.replace(FAST_RETRY, **tuning))
    return contextlib.closing(store)


def test_ranged_get_fetches_parts_concurrently(bucket: str, proxy_url: str, proxy: FaultProxy,
                                               tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 123)
    with open_s3(bucket, proxy_url, part_size=256 * 1024, concurrency=6) as s3:
        s3.put("big.bin", data)
        proxy.reset()
        proxy.delay_get_s = 0.05  # so parts in flight overlap measurably
        out = tmp_path / "big.bin"
        assert s3.get_to_file("big.bin", out, size=len(data), sha256=sha(data)) == len(data)
        assert out.read_bytes() == data
        ranges = {r.range for r in proxy.gets("big.bin")}
        assert len(proxy.gets("big.bin")) == 13 and len(ranges) == 13  # 3 MiB+123 / 256 KiB
        assert "bytes=3145728-3145850" in ranges
        assert proxy.max_in_flight >= 4
        proxy.reset()
        assert s3.get("big.bin", sha256=sha(data)) == data  # size unknown: probe, then parts
        assert len(proxy.gets("big.bin")) == 13


def test_multipart_upload_above_the_threshold(bucket: str, proxy_url: str, proxy: FaultProxy,
                                              raw_s3: Any, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(11 * MIB))
    with open_s3(bucket, proxy_url, part_size=5 * MIB, multipart_threshold=6 * MIB) as s3:
        digest = s3.put("big.bin", src)
        small = s3.put("small.bin", b"x" * MIB)
    assert digest == sha(src.read_bytes())
    parts = [r for r in proxy.seen if r.method == "PUT" and "partNumber=" in r.path]
    assert len(parts) == 3
    assert sum(r.method == "PUT" and "big.bin" in r.path and "?" not in r.path
               for r in proxy.seen) == 0  # never a single PUT of the big file
    head = raw_s3.head_object(Bucket=bucket, Key="p/big.bin")
    assert head["ETag"].strip('"').endswith("-3") and head["Metadata"]["sha256"] == digest
    body = raw_s3.get_object(Bucket=bucket, Key="p/big.bin")["Body"].read()
    assert body == src.read_bytes()
    assert raw_s3.head_object(Bucket=bucket, Key="p/small.bin")["Metadata"]["sha256"] == small


def test_a_corrupt_object_on_the_server_fails_its_checksum(s3: S3ObjectStore, raw_s3: Any,
                                                           bucket: str, tmp_path: Path) -> None:
    good = os.urandom(50_000)
    s3.put("ds/data/f.parquet", good)
    raw_s3.put_object(Bucket=bucket, Key="lake/ds/data/f.parquet", Body=_flip(good))
    with pytest.raises(ChecksumMismatchError, match="corrupt"):
        s3.get("ds/data/f.parquet", sha256=sha(good))
    with pytest.raises(ChecksumMismatchError):
        s3.get_to_file("ds/data/f.parquet", tmp_path / "f", sha256=sha(good))
    assert s3.get("ds/data/f.parquet") == _flip(good)  # without a hash: the bytes, as stored


def test_an_upload_damaged_in_transit_is_detected(s3: S3ObjectStore, proxy: FaultProxy) -> None:
    proxy.inject(Fault(1, method="PUT", corrupt=True))
    with pytest.raises(ChecksumMismatchError, match="arrived damaged"):
        s3.put("ds/data/g.parquet", os.urandom(20_000))


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError"),
                                              (429, "TooManyRequests")])
def test_throttling_and_5xx_are_retried_with_backoff(s3: S3ObjectStore, proxy: FaultProxy,
                                                     status: int, code: str) -> None:
    data = os.urandom(10_000)
    proxy.inject(Fault(3, method="PUT", status=status, code=code))
    s3.put("k", data)
    proxy.inject(Fault(4, method="GET", status=status, code=code))
    assert s3.get("k", sha256=sha(data)) == data
    assert s3.retries == 7
    assert len(proxy.gets("/k")) == 5


def test_retries_give_up_with_a_clear_error(bucket: str, proxy_url: str,
                                            proxy: FaultProxy) -> None:
    with open_s3(bucket, proxy_url, max_attempts=3) as s3:
        s3.put("k", b"v")
        proxy.reset()
        proxy.inject(Fault(100, method="GET"))
        with pytest.raises(ObjectStoreError, match=r"after 3 attempts.*SlowDown"):
            s3.get("k")
        assert len(proxy.gets("/k")) == 3
        proxy.reset()
        proxy.inject(Fault(100, method="GET", status=403, code="AccessDenied"))
        with pytest.raises(ObjectStoreError, match="AccessDenied"):
            s3.get("k")
        assert len(proxy.gets("/k")) == 1  # a permission error is not retried


def test_open_store_understands_urls(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), LocalObjectStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalObjectStore)
    s3 = open_store("s3://bucket/some/prefix", endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3ObjectStore) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    with pytest.raises(DataError, match="s3:// URL"):
        open_store("gs://bucket")


def _flip(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]
