"""Uploads to S3: one PUT for small objects, a concurrent multipart upload for large ones.

Both send the sha256 the server can check (``ChecksumSHA256``) and record it in the
object's metadata, and return the ETag S3 should report (the MD5 of what it received), so
:meth:`S3ObjectStore._verify_upload` can tell a damaged upload even from a server that
ignores checksums. A failed multipart upload is aborted so no orphan parts are billed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import botocore.exceptions as bex  # type: ignore[import-untyped]

from pitwall_executor.storage.objectstore import ChecksumMismatchError

T = TypeVar("T")


class _Tuning(Protocol):
    @property
    def part_size(self) -> int: ...

    @property
    def concurrency(self) -> int: ...


class UploadTarget(Protocol):
    """What an upload needs of :class:`pitwall_executor.storage.s3.S3ObjectStore` (declared
    here, so the two modules do not import each other)."""

    bucket: str
    url: str
    _send_checksums: bool

    @property
    def tuning(self) -> _Tuning: ...

    async def _s3(self) -> Any: ...

    async def _retry(self, attempt: Callable[[], Awaitable[T]], what: str) -> T: ...

    def _key(self, key: str) -> str: ...

    async def _head(self, key: str) -> dict[str, Any]: ...



def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _checksums_unsupported(exc: BaseException) -> bool:
    """Whether a server refused the request only because of the checksum header."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if not isinstance(cause, bex.ClientError):
        return False
    err: dict[str, Any] = cause.response.get("Error", {})
    code, message = str(err.get("Code", "")), str(err.get("Message", "")).lower()
    return code == "NotImplemented" or (
        code in ("InvalidArgument", "InvalidRequest") and "checksum" in message)


async def single_upload(store: UploadTarget, key: str, body: bytes, sha256: str) -> str:
    """PUT ``body``; return the ETag (MD5) the server should report."""
    s3 = await store._s3()

    async def put() -> Any:
        extra = ({"ChecksumSHA256": _b64(bytes.fromhex(sha256))}
                 if store._send_checksums else {})
        return await s3.put_object(Bucket=store.bucket, Key=store._key(key), Body=body,
                                   Metadata={"sha256": sha256}, **extra)

    try:
        resp = await store._retry(put, f"PUT {key!r}")
    except Exception as exc:
        if not (store._send_checksums and _checksums_unsupported(exc)):
            raise
        store._send_checksums = False  # this server cannot; verify from the ETag instead
        resp = await store._retry(put, f"PUT {key!r}")
    echoed = resp.get("ChecksumSHA256")
    if echoed is not None and echoed != _b64(bytes.fromhex(sha256)):
        raise ChecksumMismatchError(f"the server received different bytes for {key!r}; "
                                    "push it again")
    return _md5(body).hex()


async def _upload_part(store: UploadTarget, key: str, upload_id: str, number: int,
                       chunk: bytes, *, send_checksum: bool) -> dict[str, Any]:
    s3 = await store._s3()
    extra = {"ChecksumSHA256": _b64(hashlib.sha256(chunk).digest())} if send_checksum else {}
    resp = await store._retry(
        lambda: s3.upload_part(Bucket=store.bucket, Key=store._key(key), UploadId=upload_id,
                               PartNumber=number, Body=chunk, **extra),
        f"PUT {key!r} part {number}")
    return {"PartNumber": number, "ETag": resp["ETag"], **extra}


def _read(data: bytes | Path, fd: int | None, offset: int, length: int) -> bytes:
    if fd is None:
        assert isinstance(data, bytes | bytearray)
        return bytes(data[offset:offset + length])
    return os.pread(fd, length, offset)


async def multipart_upload(store: UploadTarget, key: str, data: bytes | Path,
                           sha256: str) -> str:
    """Upload ``data`` in ``tuning.part_size`` parts, ``tuning.concurrency`` at a time."""
    s3 = await store._s3()
    send = store._send_checksums
    extra = {"ChecksumAlgorithm": "SHA256"} if send else {}
    created = await store._retry(
        lambda: s3.create_multipart_upload(Bucket=store.bucket, Key=store._key(key),
                                           Metadata={"sha256": sha256}, **extra),
        f"CREATE MULTIPART {key!r}")
    upload_id = created["UploadId"]
    part = store.tuning.part_size
    size = data.stat().st_size if isinstance(data, Path) else len(data)
    offsets = list(range(0, size, part))
    md5s: list[bytes] = [b""] * len(offsets)
    gate = asyncio.Semaphore(store.tuning.concurrency)
    fd = os.open(data, os.O_RDONLY) if isinstance(data, Path) else None

    async def one(index: int, offset: int) -> dict[str, Any]:
        async with gate:  # at most `concurrency` parts read into memory at once
            chunk = _read(data, fd, offset, min(part, size - offset))
            md5s[index] = _md5(chunk)
            return await _upload_part(store, key, upload_id, index + 1, chunk, send_checksum=send)

    try:
        parts = await asyncio.gather(*(one(i, o) for i, o in enumerate(offsets)))
        await store._retry(
            lambda: s3.complete_multipart_upload(
                Bucket=store.bucket, Key=store._key(key), UploadId=upload_id,
                MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])}),
            f"COMPLETE MULTIPART {key!r}")
    except BaseException:
        # Shielded: even a cancelled upload must not leave billed orphan parts behind.
        await asyncio.shield(_abort(store, key, upload_id))
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return f"{hashlib.md5(b''.join(md5s), usedforsecurity=False).hexdigest()}-{len(md5s)}"


async def _abort(store: UploadTarget, key: str, upload_id: str) -> None:
    s3 = await store._s3()
    # Best effort; a bucket lifecycle rule reaps what is left.
    with contextlib.suppress(bex.ClientError, bex.BotoCoreError):
        await s3.abort_multipart_upload(Bucket=store.bucket, Key=store._key(key),
                                        UploadId=upload_id)


async def verify_upload(store: UploadTarget, key: str, size: int, sha: str,
                        expected_etag: str) -> None:
    """Re-read the object's metadata: size, recorded hash and (when it is an MD5) ETag."""
    head = await store._head(key)
    etag = str(head.get("ETag", "")).strip('"')
    problems = []
    if int(head["ContentLength"]) != size:
        problems.append(f"{head['ContentLength']} bytes instead of {size}")
    if head.get("Metadata", {}).get("sha256") != sha:
        problems.append("its recorded sha256 differs")
    if _md5_like(etag) and etag != expected_etag:
        problems.append(f"ETag {etag} instead of {expected_etag}")
    if problems:
        raise ChecksumMismatchError(f"upload of {key!r} to {store.url} arrived damaged ("
                                    f"{'; '.join(problems)}); push it again")


def _md5_like(etag: str) -> bool:
    body, _, parts = etag.partition("-")
    return len(body) == 32 and all(c in "0123456789abcdef" for c in body) and (
        not parts or parts.isdigit())
