"""The embedded stack inside the Jupyter server: the Backtest API and workers in threads.

Used when no ``api_url`` is configured (a laptop, ``make lab``). The API listens on a free
loopback port in its own IOLoop thread so Jupyter's loop never waits on the database,
and worker threads run jobs through the sandbox. Kernels get the URL and a token only.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

SECRET_ENV = ("PITWALL_DB_URL", "PITWALL_QUEUE_URL", "PITWALL_STORE_URL", "PITWALL_LAKE_URL")


@dataclass
class EmbeddedStack:
    """A running embedded API plus workers."""

    url: str
    token: str
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def shutdown(self) -> None:
        self.stop.set()


def _token(data_dir: Path, store: object) -> str:
    """The embedded researcher's token, made once and kept in the data dir (mode 0600)."""
    from pitwall_executor.auth import create_researcher
    from pitwall_executor.store import MetadataStore

    assert isinstance(store, MetadataStore)
    path = data_dir / "jupyter-token"
    if path.exists():
        return path.read_text().strip()
    name = f"jupyter-{getpass.getuser()}-{os.urandom(3).hex()}"
    token = create_researcher(store, name)
    path.touch(mode=0o600)
    path.write_text(token)
    return token


def start_embedded(workers: int = 1) -> EmbeddedStack:
    """Start the API on a free loopback port and ``workers`` worker threads."""
    from pitwall_executor.api.app import make_app, start_server
    from pitwall_executor.config import load_config
    from pitwall_executor.stack import Stack
    from pitwall_executor.worker import Worker

    stack = Stack.from_config(load_config())
    for name in SECRET_ENV:  # kernels inherit this environment: keep credentials out of it
        os.environ.pop(name, None)
    token = _token(stack.config.data_dir, stack.store)
    ready = threading.Event()
    port: list[int] = []
    embedded = EmbeddedStack(url="", token=token)

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = start_server(make_app(stack), 0)
        port.append(next(iter(server._sockets.values())).getsockname()[1])
        ready.set()
        loop.run_forever()

    api = threading.Thread(target=serve, name="pitwall-api", daemon=True)
    api.start()
    if not ready.wait(30):
        raise RuntimeError("the embedded Backtest API did not start within 30 s")
    embedded.url = f"http://127.0.0.1:{port[0]}"
    embedded.threads.append(api)
    for i in range(workers):
        worker = Worker(stack, name=f"jupyter-worker-{i}")
        thread = threading.Thread(target=worker.run_forever, args=(embedded.stop,),
                                  name=f"pitwall-worker-{i}", daemon=True)
        thread.start()
        embedded.threads.append(thread)
    return embedded
