"""Attempts record the worker's process: host, pid and the pid's start time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

Start-up recovery takes back only attempts whose worker is dead; on the same host that is
read from the process table (docs/architecture.md §1.5), which needs the pid and its
start time. Older attempts have neither and are judged by their heartbeat alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("host", sa.String(255)))
        batch.add_column(sa.Column("pid", sa.Integer))
        batch.add_column(sa.Column("pid_start", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        for column in ("pid_start", "pid", "host"):
            batch.drop_column(column)
