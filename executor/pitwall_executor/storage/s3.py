"""The S3 object store on aiobotocore: concurrent ranged GETs, multipart uploads, retries.

The store owns one event loop on a daemon thread and one aiobotocore client on it, so
synchronous callers (the worker, the cache) reuse warm connections, and async callers
await the ``a*`` variants. Requests are retried with exponential backoff and full jitter
on throttling (``SlowDown``, 429, 503) and on 5xx and connection errors; botocore's own
retries are off so the policy lives in one place and is counted (:attr:`retries`).

Content hashes: uploads carry ``ChecksumSHA256`` (servers that verify it reject a corrupt
body) and the sha256 in the object's metadata; when the server does not echo a checksum,
the upload is verified from the ETag (the MD5 S3 computed of what it received) and a HEAD.
Downloads are verified against the hash the caller expects.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import os
import random
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import botocore.exceptions as bex  # type: ignore[import-untyped]
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]

from pitwall_executor.storage.objectstore import (
    ChecksumMismatchError,
    ObjectNotFoundError,
    ObjectStoreError,
    check_key,
    mismatch,
    sha256_bytes,
    sha256_file,
)

T = TypeVar("T")
Sink = Callable[[int, bytes], None]

_RETRY_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestTimeout", "InternalError", "ServiceUnavailable", "500", "502", "503", "504",
})
_NETWORK_ERRORS = (bex.HTTPClientError, bex.ConnectionError, bex.IncompleteReadError,
                   aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)
_READ_CHUNK = 1 << 20
_LIVE: weakref.WeakSet[S3ObjectStore] = weakref.WeakSet()


@atexit.register
def _close_live_stores() -> None:
    # A CLI run never closes its stack: close the clients here so aiohttp does not complain.
    for store in list(_LIVE):
        with contextlib.suppress(Exception):
            store.close()


@dataclasses.dataclass(frozen=True)
class S3Tuning:
    """Transfer knobs; the defaults suit files of a few MiB to a few GiB."""

    part_size: int = 8 << 20  # ranged-GET and multipart part size (S3 minimum part: 5 MiB)
    multipart_threshold: int = 64 << 20
    concurrency: int = 8  # parts in flight per object
    max_attempts: int = 6
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 4.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0


class _Retryable(Exception):
    """A transfer ended early (short body); worth another attempt."""


def _code(exc: bex.ClientError) -> tuple[str, int]:
    err: dict[str, Any] = exc.response.get("Error", {})
    meta: dict[str, Any] = exc.response.get("ResponseMetadata", {})
    return str(err.get("Code", "")), int(meta.get("HTTPStatusCode", 0) or 0)


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx and connection failures are transient; everything else is not."""
    if isinstance(exc, bex.ClientError):
        code, status = _code(exc)
        return code in _RETRY_CODES or status >= 500 or status == 429
    return isinstance(exc, (*_NETWORK_ERRORS, _Retryable))


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, bex.ClientError) and (
        _code(exc)[0] in ("NoSuchKey", "404", "NotFound") or _code(exc)[1] == 404
    )


def _status(exc: BaseException) -> int:
    """HTTP status of the S3 error behind ``exc`` (0 when there is none)."""
    cause = exc.__cause__
    return _code(cause)[1] if isinstance(cause, bex.ClientError) else 0


class S3ObjectStore:
    """Objects under ``s3://bucket/prefix`` on AWS S3 or any S3-compatible server."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, tuning: S3Tuning | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.tuning = tuning or S3Tuning()
        self.retries = 0  # requests retried, for tests and metrics
        self._send_checksums = True
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._client: Any = None
        self._client_cm: Any = None

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 tuning: S3Tuning | None = None) -> S3ObjectStore:
        """``s3://bucket/optional/prefix`` → a store; credentials from the usual AWS chain."""
        if not url.startswith("s3://") or not url.removeprefix("s3://").split("/")[0]:
            raise ObjectStoreError(f"{url!r} is not an s3://bucket/prefix URL")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return cls(bucket, prefix, endpoint_url=endpoint_url, region=region, tuning=tuning)

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.url!r}, endpoint_url={self.endpoint_url!r})"

    # -- the private event loop ------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # After a fork the loop thread does not exist in the child: start afresh.
            if self._loop is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                self._client = self._client_cm = None
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                                name=f"s3-{self.bucket}")
                self._thread.start()
                self._pid = os.getpid()
                _LIVE.add(self)
            return self._loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop()).result()

    async def _await(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the store's loop from any other loop."""
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(coro, self._ensure_loop()))

    async def _s3(self) -> Any:
        if self._client is None:
            t = self.tuning
            config = AioConfig(
                retries={"total_max_attempts": 1}, connect_timeout=t.connect_timeout_s,
                read_timeout=t.read_timeout_s, max_pool_connections=max(2 * t.concurrency, 10),
                s3={"addressing_style": "path"} if self.endpoint_url else None,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            self._client_cm = get_session().create_client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config)
            self._client = await self._client_cm.__aenter__()
        return self._client

    def close(self) -> None:
        """Close the client and stop the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._pid != os.getpid():
            return
        if self._client_cm is not None:
            asyncio.run_coroutine_threadsafe(self._client_cm.__aexit__(None, None, None),
                                             loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = self._client = self._client_cm = None

    # -- retries -------------------------------------------------------------------------

    async def _retry(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        t = self.tuning
        for n in range(t.max_attempts):
            try:
                return await attempt()
            except Exception as exc:
                if _not_found(exc):
                    raise ObjectNotFoundError(f"{what}: no such object in {self.url}") from exc
                if not is_retryable(exc):
                    raise ObjectStoreError(f"{what} on {self.url} failed: {exc}") from exc
                if n + 1 == t.max_attempts:
                    raise ObjectStoreError(
                        f"{what} on {self.url} still failing after {t.max_attempts} attempts "
                        f"({exc}); the server is throttling or down, retry the job later"
                    ) from exc
            self.retries += 1
            # Full jitter: spreads the retries of many workers instead of synchronising them.
            await asyncio.sleep(self._rng.uniform(0, min(t.backoff_cap_s, t.backoff_base_s * 2**n)))
        raise AssertionError("unreachable")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)

    # -- reads ---------------------------------------------------------------------------

    async def _fetch_part(self, key: str, lo: int, hi: int, sink: Sink,
                          etag: str | None) -> tuple[int, str]:
        """GET bytes ``[lo, hi)`` into ``sink``; return (object size, ETag)."""
        s3 = await self._s3()
        extra = {"IfMatch": etag} if etag else {}

        async def attempt() -> tuple[int, str]:
            resp = await s3.get_object(Bucket=self.bucket, Key=self._key(key),
                                       Range=f"bytes={lo}-{hi - 1}", **extra)
            async with resp["Body"] as body:
                offset = lo
                while chunk := await body.read(_READ_CHUNK):
                    sink(offset, chunk)
                    offset += len(chunk)
            total = int(resp["ContentRange"].rsplit("/", 1)[1])
            if offset != min(hi, total):
                raise _Retryable(f"short read of {key}: {offset - lo} bytes")
            return total, str(resp["ETag"])

        try:
            return await self._retry(attempt, f"GET {key!r} bytes {lo}-{hi - 1}")
        except ObjectStoreError as exc:
            if _status(exc) == 412:
                raise ChecksumMismatchError(f"{key!r} changed on {self.url} while being read; "
                                            "retry the job") from exc
            raise

    async def _download(self, key: str, sink: Sink, size: int | None) -> int:
        """Fetch the whole object into ``sink``: parts in parallel, pinned to one ETag."""
        part = self.tuning.part_size
        etag: str | None = None
        start = 0
        if size is None or size <= part:
            if size == 0:
                return 0
            try:
                total, etag = await self._fetch_part(key, 0, part, sink, None)
            except ObjectStoreError as exc:
                # An empty object has no byte 0 to ask for: S3 answers 416.
                if _status(exc) == 416 and await self._asize(key) == 0:
                    return 0
                raise
            if size is not None and total != size:
                raise ChecksumMismatchError(f"{key!r} on {self.url} is {total} bytes, expected "
                                            f"{size}; push the dataset again")
            start = part
        else:
            total = size
        gate = asyncio.Semaphore(self.tuning.concurrency)

        async def one(lo: int) -> None:
            async with gate:
                got, _ = await self._fetch_part(key, lo, min(lo + part, total), sink, etag)
            if got != total:
                raise ChecksumMismatchError(f"{key!r} on {self.url} is {got} bytes, expected "
                                            f"{total}; push the dataset again")

        await asyncio.gather(*(one(lo) for lo in range(start, total, part)))
        return total

    async def _get(self, key: str, sha256: str | None) -> bytes:
        buf = bytearray()

        def sink(offset: int, chunk: bytes) -> None:
            end = offset + len(chunk)
            if len(buf) < end:
                buf.extend(bytes(end - len(buf)))
            buf[offset:end] = chunk

        await self._download(key, sink, None)
        if sha256 is not None and (actual := sha256_bytes(buf)) != sha256:
            raise mismatch(f"{self.url}/{key}", sha256, actual)
        return bytes(buf)

    def get(self, key: str, *, sha256: str | None = None) -> bytes:
        """See :meth:`ObjectStore.get`."""
        return self._run(self._get(key, sha256))

    async def aget(self, key: str, *, sha256: str | None = None) -> bytes:
        """:meth:`get` for asyncio callers (runs on the store's loop)."""
        return await self._await(self._get(key, sha256))

    async def _get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        if end == start:
            return b""
        chunks: list[bytes] = []
        try:
            await self._fetch_part(key, start, end, lambda _o, c: chunks.append(c), None)
        except ObjectStoreError as exc:
            if _status(exc) == 416:
                return b""  # the range starts past the end: empty, like a file read
            raise
        return b"".join(chunks)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """See :meth:`ObjectStore.get_range`."""
        return self._run(self._get_range(key, start, end))

    async def aget_range(self, key: str, start: int, end: int) -> bytes:
        """:meth:`get_range` for asyncio callers."""
        return await self._await(self._get_range(key, start, end))

    def get_to_file(self, key: str, dest: Path, *, size: int | None = None,
                    sha256: str | None = None) -> int:
        """See :meth:`ObjectStore.get_to_file`; parts land at their offsets as they arrive."""
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            total = self._run(self._download(key, lambda o, c: _pwrite_all(fd, c, o), size))
        finally:
            os.close(fd)
        if sha256 is not None and (actual := sha256_file(dest)) != sha256:
            raise mismatch(f"{self.url}/{key}", sha256, actual)
        return total

    async def _head(self, key: str) -> dict[str, Any]:
        s3 = await self._s3()
        head: dict[str, Any] = await self._retry(
            lambda: s3.head_object(Bucket=self.bucket, Key=self._key(key)), f"HEAD {key!r}")
        return head

    async def _asize(self, key: str) -> int:
        return int((await self._head(key))["ContentLength"])

    def size(self, key: str) -> int:
        """See :meth:`ObjectStore.size`."""
        return self._run(self._asize(key))

    def exists(self, key: str) -> bool:
        """See :meth:`ObjectStore.exists`."""
        try:
            self._run(self._head(key))
        except ObjectNotFoundError:
            return False
        return True

    async def _list(self, prefix: str, delimiter: str | None) -> list[str]:
        s3 = await self._s3()
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        out: list[str] = []
        token: dict[str, str] = {}
        while True:
            args = {"Bucket": self.bucket, "Prefix": full, **token}
            if delimiter:
                args["Delimiter"] = delimiter
            page: dict[str, Any] = await self._retry(
                lambda a=args: s3.list_objects_v2(**a), f"LIST {prefix!r}")  # type: ignore[misc]
            if delimiter:
                out += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            else:
                out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": page["NextContinuationToken"]}
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in out)

    def list_keys(self, prefix: str) -> list[str]:
        """See :meth:`ObjectStore.list_keys`."""
        return self._run(self._list(prefix, None))

    def list_prefixes(self, prefix: str) -> list[str]:
        """See :meth:`ObjectStore.list_prefixes`."""
        return self._run(self._list(prefix, "/"))

    # -- writes --------------------------------------------------------------------------

    def put(self, key: str, data: bytes | Path, *, sha256: str | None = None) -> str:
        """See :meth:`ObjectStore.put`; multipart above ``tuning.multipart_threshold``."""
        return self._run(self._put(key, data, sha256))

    async def aput(self, key: str, data: bytes | Path, *, sha256: str | None = None) -> str:
        """:meth:`put` for asyncio callers."""
        return await self._await(self._put(key, data, sha256))

    async def _put(self, key: str, data: bytes | Path, sha256: str | None) -> str:
        from pitwall_executor.storage.s3_upload import (
            multipart_upload,
            single_upload,
            verify_upload,
        )

        actual = sha256_file(data) if isinstance(data, Path) else sha256_bytes(data)
        if sha256 is not None and actual != sha256:
            raise mismatch(f"source of {key!r}", sha256, actual)
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        if size > self.tuning.multipart_threshold:
            etag = await multipart_upload(self, key, data, actual)
        else:
            body = data.read_bytes() if isinstance(data, Path) else bytes(data)
            etag = await single_upload(self, key, body, actual)
        await verify_upload(self, key, size, actual, etag)
        return actual

    def delete(self, key: str) -> None:
        """Remove the object under ``key``; a key with no object is not an error."""
        self._run(self._delete(key))

    async def _delete(self, key: str) -> None:
        s3 = await self._s3()
        with contextlib.suppress(ObjectNotFoundError):
            await self._retry(lambda: s3.delete_object(Bucket=self.bucket, Key=self._key(key)),
                              f"DELETE {key!r}")

    async def create_bucket(self) -> None:
        """Create the bucket if it does not exist (for tests, benchmarks and first pushes)."""
        s3 = await self._s3()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            await self._retry(lambda: s3.create_bucket(Bucket=self.bucket), "CREATE BUCKET")

    def ensure_bucket(self) -> None:
        """Synchronous :meth:`create_bucket`."""
        self._run(self.create_bucket())


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
