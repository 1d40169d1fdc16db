"""Alembic environment: migrations run on a connection handed in by ``upgrade()``.

``alembic -x url=postgresql+psycopg://…`` also works from the command line, for an
operator who wants to inspect or run a migration by hand.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from pitwall_executor.jobs.schema import metadata

config = context.config


def _run(connection: sa.engine.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database with: alembic -x url=<database url> upgrade head")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
