"""PostgreSQL goes away for 10 s: the API answers 503 meanwhile and recovers by itself.

The test runs its OWN PostgreSQL (initdb + pg_ctl in a temp dir, on a free port), never
the shared server.
"""

from __future__ import annotations

import contextlib
import glob
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from apikit import Api, StartApi


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        pytest.fail("PostgreSQL binaries are missing under /usr/lib/postgresql; run "
                    "`make services` to install them")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnPostgres:
    """A throw-away PostgreSQL cluster run as the postgres user."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="pitwall-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.port = _free_port()
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                          str(self.dir / "log"), "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                          "-c fsync=off", "start")

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast",
                          "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def api_on_own_pg(own_pg: OwnPostgres, live_api: StartApi) -> Api:
    # own_pg first: set up before the API, so torn down after it.
    return live_api(own_pg.url)


def test_the_api_answers_503_while_postgres_is_down_and_recovers(
        api_on_own_pg: Api, own_pg: OwnPostgres) -> None:
    api = api_on_own_pg
    job = api.submit().json()["id"]
    assert api.get(f"/v1/backtests/{job}").status_code == 200

    own_pg.stop()
    down_until = time.monotonic() + 10.0
    answers: list[int] = []
    while time.monotonic() < down_until:
        t0 = time.monotonic()
        res = api.get(f"/v1/backtests/{job}")
        assert time.monotonic() - t0 < 5.0, "a status read hung while the database was down"
        answers.append(res.status_code)
        if res.status_code == 503:
            body = res.json()
            assert body["error"] == "database_unavailable" and "Retry" in body["message"]
        time.sleep(0.2)
    assert set(answers) == {503}, answers
    assert api.submit().status_code == 503
    assert requests.get(api.url + "/healthz", timeout=10).status_code == 503

    own_pg.start()  # the API process is not restarted
    deadline = time.monotonic() + 15.0
    while (res := api.get(f"/v1/backtests/{job}")).status_code != 200:
        assert time.monotonic() < deadline, f"the API did not recover: {res.status_code}"
        time.sleep(0.2)
    assert res.json()["status"] == "PENDING"
    again = api.submit()
    assert again.status_code == 202
    ids = {j["id"] for j in api.get("/v1/backtests").json()["items"]}
    assert ids == {job, again.json()["id"]}
