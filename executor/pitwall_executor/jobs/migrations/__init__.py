"""Alembic migrations of the metadata database, applied by :class:`MetadataStore` on start.

``upgrade(engine)`` brings any empty or older database to the newest revision. Several
processes may start at once (a fleet of workers after a deploy), so the upgrade runs
under a lock: a transaction-scoped advisory lock on PostgreSQL (whose DDL is
transactional), a file lock beside the database file on SQLite.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
_PG_LOCK_KEY = 0x70697477  # "pitw": one advisory lock id for schema upgrades


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at these migrations (and at ``connection`` if given)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision id."""
    head_rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head_rev is not None
    return head_rev


def current(connection: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Upgrade the database behind ``engine`` to the newest revision (idempotent)."""
    target = head()
    with engine.connect() as conn:
        if current(conn) == target:
            return  # the common case: one cheap read, no lock
    with _lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        if current(conn) is None and sa.inspect(conn).has_table("jobs"):
            raise RuntimeError(
                f"the database {engine.url.render_as_string(hide_password=True)} was created "
                "before Pitwall used migrations; move it aside (it holds only test runs) "
                "and start again to create a fresh one")
        command.upgrade(alembic_config(conn), "head")


@contextmanager
def _lock(engine: Engine) -> Iterator[None]:
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    with open(f"{path}.migrate.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
