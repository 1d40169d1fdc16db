"""A running attempt may show its metrics before it ends (their audit verdict pending).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

The database's rule on ``metrics`` rows was "they belong to the attempt that completed the
job". A vectorized attempt now commits its metrics as soon as the trusted engine has them,
while the lookahead audit still runs (docs/architecture.md §2, "metrics first"), so the
rule becomes: a metrics row belongs to the job's current attempt, while it runs or once it
completed. A job taken back, cancelled or failed drops the row (``transitions``).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_RULES = {
    "upgrade": ("NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = NEW.job_id"
                " AND jobs.attempt = NEW.attempt AND jobs.status IN ('RUNNING', 'COMPLETED'))",
                "metrics belong to the current attempt of a running or completed job"),
    "downgrade": ("NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = NEW.job_id"
                  " AND jobs.attempt = NEW.attempt AND jobs.status = 'COMPLETED')",
                  "metrics belong to the attempt that completed the job"),
}


def _metrics_rule(cond: str, message: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""CREATE OR REPLACE FUNCTION pitwall_metrics_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF {cond} THEN RAISE EXCEPTION 'illegal job transition: {message}'
    USING ERRCODE = 'check_violation'; END IF;
  RETURN NEW;
END $$""")
        return
    op.execute("DROP TRIGGER IF EXISTS metrics_of_completing_attempt")
    op.execute(f"CREATE TRIGGER metrics_of_completing_attempt BEFORE INSERT ON metrics "
               f"FOR EACH ROW WHEN {cond} "
               f"BEGIN SELECT RAISE(ABORT, 'illegal job transition: {message}'); END")


def upgrade() -> None:
    _metrics_rule(*_RULES["upgrade"])


def downgrade() -> None:
    _metrics_rule(*_RULES["downgrade"])
