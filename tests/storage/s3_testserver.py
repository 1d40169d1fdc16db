"""A real S3-compatible server for the tests (moto's standalone server on loopback), and a
tiny loopback HTTP proxy in front of it that counts requests and injects faults.

The proxy speaks HTTP/1.1 with keep-alive over real sockets: it can answer the next N
matching requests with ``503 SlowDown`` (or any status), flip a byte in the next response
or request body, delay or stall responses, and it records every request it forwarded.
"""

from __future__ import annotations

import http.client
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest

#: Throwaway credentials: moto accepts any, boto3 wants some.
AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "pitwall-test", "AWS_SECRET_ACCESS_KEY": "x",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade",
        "expect"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``moto_server`` on a free loopback port; raise if it does not answer in 30 s."""
    exe = Path(sys.executable).parent / "moto_server"
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"moto_server did not listen on port {port} within 30 s")


@dataclass
class Fault:
    """What to do to the next ``count`` requests matching ``method`` (None: any)."""

    count: int
    method: str | None = None
    status: int = 503
    code: str = "SlowDown"
    corrupt: bool = False  # flip a byte of the object body instead of failing
    stall: bool = False  # send half the body, then hang until the proxy closes


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FaultProxy:
    """The proxy's state: faults to inject and requests seen (shared by handler threads)."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[Request] = field(default_factory=list)
    delay_get_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def inject(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.seen.clear()
            self.delay_get_s = 0.0
            self.max_in_flight = 0
            self.release.clear()

    def gets(self, key_part: str) -> list[Request]:
        with self.lock:
            return [r for r in self.seen if r.method == "GET" and key_part in r.path]

    def _take(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.method in (None, method):
                    if (fault.corrupt or fault.stall) and "?" in path:
                        continue  # body faults target object bodies, not listings
                    fault.count -= 1
                    return fault
        return None


def _read_body(rfile: BinaryIO, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int(rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += rfile.read(size)
            rfile.readline()
    return rfile.read(int(headers.get("content-length", "0")))


def _flip(body: bytes) -> bytes:
    if not body:
        return body
    mid = len(body) // 2
    return body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1:]


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        state = self.server.state
        host, port = state.upstream.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            while self._one(state, conn):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()

    def _one(self, state: FaultProxy, conn: http.client.HTTPConnection) -> bool:
        line = self.rfile.readline(65537)
        if not line.strip():
            return False
        method, target, _version = line.decode("latin-1").split()
        raw: list[tuple[str, str]] = []
        while (h := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = h.decode("latin-1").partition(":")
            raw.append((name.strip(), value.strip()))
        headers = {k.lower(): v for k, v in raw}
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        body = _read_body(self.rfile, headers)
        with state.lock:
            state.seen.append(Request(method, target, headers.get("range")))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            fault = state._take(method, target)
            if fault is not None and not (fault.corrupt or fault.stall):
                self._error(fault)
                return True
            if fault is not None and fault.corrupt and method == "PUT":
                body = _flip(body)
            if method == "GET" and state.delay_get_s:
                time.sleep(state.delay_get_s)
            fwd = {k: v for k, v in raw if k.lower() not in _HOP | {"content-length"}}
            fwd["Content-Length"] = str(len(body))
            conn.request(method, target, body=body, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            if fault is not None and fault.corrupt and method == "GET":
                data = _flip(data)
            self._reply(resp.status, resp.reason, resp.getheaders(), data,
                        stall=fault is not None and fault.stall, head=method == "HEAD")
            return True
        finally:
            with state.lock:
                state.in_flight -= 1

    def _error(self, fault: Fault) -> None:
        xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
               f"<Message>injected by the test proxy</Message></Error>").encode()
        self._reply(fault.status, "Injected", [("Content-Type", "application/xml")], xml)

    def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes,
               *, stall: bool = False, head: bool = False) -> None:
        # A HEAD answer has no body but tells the object's length: pass that through.
        drop = _HOP if head else _HOP | {"content-length"}
        out = [f"HTTP/1.1 {status} {reason}"]
        out += [f"{k}: {v}" for k, v in headers if k.lower() not in drop]
        out += [] if head else [f"Content-Length: {len(data)}"]
        out += ["Connection: keep-alive", "", ""]
        self.wfile.write("\r\n".join(out).encode("latin-1"))
        if stall:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.server.state.release.wait(120)
            raise ConnectionError("stalled response abandoned")
        self.wfile.write(data)
        self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: FaultProxy, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.state = state


def start_proxy(upstream: str, host: str = "127.0.0.1") -> tuple[_Server, FaultProxy, str]:
    """A proxy to ``upstream`` on a free port of ``host`` (loopback unless a test's own
    address is given), serving on a daemon thread."""
    state = FaultProxy(upstream)
    server = _Server(state, host)
    threading.Thread(target=server.serve_forever, daemon=True, name="s3-fault-proxy").start()
    return server, state, f"http://{host}:{server.server_address[1]}"


# -- pytest fixtures (imported by tests/datalake/conftest.py) ------------------------------

@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on loopback for the whole session, with throwaway credentials."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_TEST_ENV.items():
            mp.setenv(name, value)
        log = tmp_path_factory.mktemp("moto") / "moto.log"
        try:
            proc, url = start_moto(log)
        except (OSError, RuntimeError) as exc:
            pytest.fail(f"could not start the S3-compatible test server (moto_server): {exc}; "
                        "run `make bootstrap` to install moto[server]")
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="session")
def _proxy_server(moto_endpoint: str) -> Iterator[tuple[FaultProxy, str]]:
    server, state, url = start_proxy(moto_endpoint)
    try:
        yield state, url
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(_proxy_server: tuple[FaultProxy, str]) -> FaultProxy:
    """The fault-injecting proxy in front of moto, reset for this test."""
    state, _url = _proxy_server
    state.reset()
    return state


@pytest.fixture
def proxy_url(_proxy_server: tuple[FaultProxy, str], proxy: FaultProxy) -> str:
    """Endpoint URL of the proxy (the S3 endpoint the code under test talks to)."""
    return _proxy_server[1]


@pytest.fixture(scope="session")
def raw_s3(moto_endpoint: str) -> Any:
    """A plain boto3 client straight to moto: makes buckets, corrupts objects behind our back."""
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(raw_s3: Any) -> str:
    """A fresh, empty bucket for one test."""
    name = f"pw-{uuid.uuid4().hex[:12]}"
    raw_s3.create_bucket(Bucket=name)
    return name
