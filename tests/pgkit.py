"""A private PostgreSQL cluster and a free loopback port, for tests that stop the database
(``initdb`` + ``pg_ctl`` in a temp dir, on a free port, as the postgres user), so stopping
it never touches the machine's server; and what a restart does to a database's clients.
"""

from __future__ import annotations

import contextlib
import glob
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

_OTHERS = "datname = current_database() AND pid <> pg_backend_pid()"


def terminate_other_connections(url: str) -> int:
    """What a PostgreSQL restart does to every client of ``url``'s database: their server
    processes end (waited for, at most 10 s). Returns how many were ended."""
    killer = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with killer.connect() as conn:
            killed = conn.execute(sa.text(
                f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                f"FROM pg_stat_activity WHERE {_OTHERS}")).scalar_one()
            deadline = time.monotonic() + 10
            while conn.execute(sa.text(
                    f"SELECT count(*) FROM pg_stat_activity WHERE {_OTHERS}")).scalar_one():
                assert time.monotonic() < deadline, "terminated backends did not exit in 10 s"
                time.sleep(0.05)
    finally:
        killer.dispose()
    return int(killed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnPostgres:
    """A throw-away PostgreSQL cluster run as the postgres user; ``stop``/``start`` it."""

    def __init__(self, listen: tuple[str, ...] = ("127.0.0.1",),
                 trust_cidr: str | None = None) -> None:
        """``listen``: the addresses it listens on; ``trust_cidr``: a network whose hosts
        may connect without a password (the netns nodes of tests/cluster)."""
        self.listen = listen
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            pytest.fail("PostgreSQL binaries are missing under /usr/lib/postgresql; run "
                        "`make services` to install them")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="pitwall-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.port = free_port()
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync")
        if trust_cidr is not None:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {trust_cidr} trust\n")

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, address: str) -> str:
        """Its URL through one of the addresses it listens on."""
        return f"postgresql+psycopg://postgres@{address}:{self.port}/postgres"

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        listen = ",".join(self.listen)
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                          str(self.dir / "log"), "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses={listen} "
                          "-c fsync=off", "start")

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast",
                          "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
