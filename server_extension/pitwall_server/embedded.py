"""The embedded stack inside the Jupyter server: the Backtest API and workers in threads.

Used when no ``api_url`` is configured (a laptop, ``make lab``): the same
:class:`~pitwall_executor.orchestration.embedded.EmbeddedServer` as ``pitwall serve``, on
a free loopback port, so Jupyter's loop never waits on the database. One embedded stack
runs the jobs of a data dir (it holds the data dir's lock): if a ``pitwall serve`` (or
another lab) already does, this server talks to that one instead of starting its own.
Kernels get the URL and a researcher token only; database and queue settings are removed
from the environment they inherit.
"""

from __future__ import annotations

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
    """The Backtest API the lab uses, the token of the notebook's researcher, and the
    embedded server when this process runs it (None: another process does)."""

    url: str
    token: str
    server: EmbeddedServer | None = None

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.stop()


def _token(data_dir: Path, store: MetadataStore) -> str:
    """The token of the machine's local researcher, the one ``pitwall run`` and ``pitwall
    serve`` use too (one identity rule: ``PITWALL_RESEARCHER``, else the OS user), so the
    panel shows every local run."""
    from pitwall_executor.orchestration.embedded import kept_token

    return kept_token(store, data_dir)


def start_embedded(workers: int = 1) -> EmbeddedStack:
    """Start the API on a free loopback port and ``workers`` worker threads, or use the
    embedded server that already runs the data dir's jobs."""
    from pitwall_executor.config import load_config
    from pitwall_executor.orchestration.embedded import EmbeddedServer
    from pitwall_executor.orchestration.ownership import DataDirInUseError, running_server
    from pitwall_executor.stack import Stack

    stack = Stack.from_config(load_config())
    for name in SECRET_ENV:
        os.environ.pop(name, None)
    data_dir = stack.config.data_dir
    for _ in range(3):  # a server starting at the same moment may win the lock
        other = running_server(data_dir)
        if other is not None:
            stack.store.close()
            return EmbeddedStack(url=other.url, token=other.token)
        token = _token(data_dir, stack.store)
        try:
            server = EmbeddedServer(stack, workers=workers, token=token).start()
        except DataDirInUseError:
            continue
        return EmbeddedStack(url=server.url, token=token, server=server)
    raise DataDirInUseError(f"could not start or find the Pitwall server of {data_dir}")
