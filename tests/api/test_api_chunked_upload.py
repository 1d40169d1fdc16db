"""A chunked upload over the limit gets the same JSON 413 as one that declares its length."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import requests
from apikit import Api, bundle_bytes, spec_json

MIB = 1024 * 1024  # the test API's bundle limit is 1 MiB (2 MiB with the spec's room)


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes as a generator: requests sends it chunked, with no Content-Length."""
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def _post_chunked(api: Api, body: Iterator[bytes], ctype: str) -> requests.Response:
    headers = {**api.headers("alice"), "Content-Type": ctype}
    try:
        return requests.post(api.url + "/v1/backtests", data=body, headers=headers, timeout=30)
    except requests.ConnectionError as exc:
        pytest.fail(f"the server dropped the chunked upload instead of answering 413: {exc}")


@pytest.mark.parametrize("size_mib", [3, 64], ids=["read-and-dropped", "far-over"])
def test_a_chunked_upload_over_the_limit_is_a_json_413(api: Api, size_mib: int) -> None:
    res = _post_chunked(api, _chunks(size_mib * MIB), "multipart/form-data; boundary=zz")
    assert res.status_code == 413, (res.status_code, res.text)
    body = res.json()
    assert body["error"] == "too_large" and "limited to 1 MiB" in body["message"], body
    assert api.counts() == (0, 0)


def test_one_enormous_declared_chunk_is_a_json_413_too(api: Api) -> None:
    # A single chunk declared as 1 GiB: tornado's own limit would answer a bare 400.
    url = urlparse(api.url)
    head = (f"POST /v1/backtests HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {api.tokens['alice']}\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\n"
            "Transfer-Encoding: chunked\r\n\r\n" f"{1 << 30:x}\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head)
        block = b"x" * (256 * 1024)
        try:
            for _ in range(64):  # up to 16 MiB, well past where the server answers
                sock.sendall(block)
        except OSError:
            pass  # the server answered and closed: read what it said
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b'"error":"too_large"' in rest and b"limited to 1 MiB" in rest, answer[:600]
    assert api.counts() == (0, 0)


def test_a_chunked_upload_within_the_limit_is_accepted(api: Api) -> None:
    files = {"bundle": ("bundle.zip", bundle_bytes(), "application/zip"),
             "spec": ("spec.json", spec_json(), "application/json")}
    prepared = requests.Request("POST", api.url, files=files).prepare()
    assert isinstance(prepared.body, bytes)
    body = prepared.body
    res = _post_chunked(api, iter([body[:1000], body[1000:]]),
                        prepared.headers["Content-Type"])
    assert res.status_code == 202, res.text
    assert api.counts() == (1, 1)
