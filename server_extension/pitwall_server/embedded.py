"""The embedded stack inside the Jupyter server: the Backtest API and workers in threads.

Used when no ``api_url`` is configured (a laptop, ``make lab``): the same
:class:`~pitwall_executor.cli.serve.EmbeddedServer` as ``pitwall serve``, on a free
loopback port, so Jupyter's loop never waits on the database. Kernels get the URL and a
researcher token only; database and queue settings are removed from the environment
they inherit.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pitwall_executor.jobs.store import MetadataStore
    from pitwall_executor.orchestration.embedded import EmbeddedServer

SECRET_ENV = ("PITWALL_DB_URL", "PITWALL_QUEUE_URL", "PITWALL_STORE_URL", "PITWALL_LAKE_URL")


@dataclass
class EmbeddedStack:
    """A running embedded API plus workers, and the token of the notebook's researcher."""

    server: EmbeddedServer
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    def shutdown(self) -> None:
        self.server.stop()


def _token(data_dir: Path, store: MetadataStore) -> str:
    """The embedded researcher's token, made once and kept in the data dir (mode 0600)."""
    from pitwall_executor.jobs.researchers import create_researcher

    path = data_dir / "jupyter-token"
    if path.exists():
        return path.read_text().strip()
    token = create_researcher(store, f"jupyter-{getpass.getuser()}-{os.urandom(3).hex()}")
    path.touch(mode=0o600)
    path.write_text(token)
    return token


def start_embedded(workers: int = 1) -> EmbeddedStack:
    """Start the API on a free loopback port and ``workers`` worker threads."""
    from pitwall_executor.config import load_config
    from pitwall_executor.orchestration.embedded import EmbeddedServer
    from pitwall_executor.stack import Stack

    stack = Stack.from_config(load_config())
    for name in SECRET_ENV:
        os.environ.pop(name, None)
    token = _token(stack.config.data_dir, stack.store)
    return EmbeddedStack(server=EmbeddedServer(stack, workers=workers).start(), token=token)
