"""The initial schema, and the job state machine enforced by the database.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Legal job transitions (any other change of ``status``, ``attempt`` or ``recovered`` is
refused by a trigger, whoever issues the UPDATE):

- a job is created ``PENDING`` with ``attempt = 0`` and ``recovered = 0``;
- ``PENDING → RUNNING`` opens a new attempt: ``attempt`` grows by exactly one (a sweep
  parent, which is never run itself, moves to RUNNING without an attempt);
- ``RUNNING → COMPLETED | FAILED | CANCELLED | TIMED_OUT``;
- ``PENDING → CANCELLED | FAILED`` (cancelled or refused before it ran); never straight
  to COMPLETED or TIMED_OUT;
- ``RUNNING → PENDING`` only by the recovery path, which marks itself by raising
  ``recovered`` by exactly one in the same UPDATE (a worker died, or handed its job back
  on shutdown); ``recovered`` changes on no other transition;
- a terminal state is final: its status, attempt and recovered never change again;
- ``kind`` and ``researcher`` never change (the quota counts on them);
- a metrics row may only be written for the attempt that completed the job.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_TERMINAL = "('COMPLETED','FAILED','CANCELLED','TIMED_OUT')"

# (name, condition under which the UPDATE is illegal, what the refusal says)
UPDATE_RULES: list[tuple[str, str, str]] = [
    ("terminal_is_final",
     f"OLD.status IN {_TERMINAL} AND (NEW.status <> OLD.status OR NEW.attempt <> OLD.attempt"
     " OR NEW.recovered <> OLD.recovered)",
     "a job in a terminal state is final"),
    ("pending_cannot_finish",
     "OLD.status = 'PENDING' AND NEW.status IN ('COMPLETED','TIMED_OUT')",
     "a PENDING job cannot complete or time out without running"),
    ("start_opens_attempt",
     "OLD.status = 'PENDING' AND NEW.status = 'RUNNING' AND OLD.kind = 'run'"
     " AND NEW.attempt <> OLD.attempt + 1",
     "starting a job must open a new attempt (attempt + 1)"),
    ("attempt_moves_on_start_only",
     "NEW.attempt <> OLD.attempt AND NOT (OLD.status = 'PENDING' AND NEW.status = 'RUNNING'"
     " AND NEW.attempt = OLD.attempt + 1)",
     "the attempt number changes only when a job starts, by one"),
    ("requeue_by_recovery_only",
     "OLD.status = 'RUNNING' AND NEW.status = 'PENDING' AND NEW.recovered <> OLD.recovered + 1",
     "RUNNING -> PENDING only through the recovery path (recovered + 1)"),
    ("recovered_moves_on_requeue_only",
     "NEW.recovered <> OLD.recovered AND NOT (OLD.status = 'RUNNING'"
     " AND NEW.status = 'PENDING' AND NEW.recovered = OLD.recovered + 1)",
     "recovered changes only on RUNNING -> PENDING, by one"),
    ("identity_is_fixed",
     "NEW.kind <> OLD.kind OR NEW.researcher <> OLD.researcher",
     "the kind and researcher of a job never change"),
]
INSERT_RULE = ("NEW.status <> 'PENDING' OR NEW.attempt <> 0 OR NEW.recovered <> 0",
               "a job is created PENDING with no attempt")
METRICS_RULE = ("NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = NEW.job_id"
                " AND jobs.attempt = NEW.attempt AND jobs.status = 'COMPLETED')",
                "metrics belong to the attempt that completed the job")


def _tables() -> None:
    op.create_table(
        "researchers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False, server_default="researcher"),
        sa.Column("token_sha256", sa.String(64), unique=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("researcher", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("data_version", sa.Integer),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", _TS, nullable=False, index=True),
        sa.Column("started_at", _TS),
        sa.Column("finished_at", _TS),
        sa.Column("kind", sa.String(8), nullable=False, server_default="run"),
        sa.Column("parent_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  index=True),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recovered", sa.Integer, nullable=False, server_default="0"),
        sa.Column("grid", sa.Text),
        sa.CheckConstraint(
            "status IN ('PENDING','RUNNING','COMPLETED','FAILED','CANCELLED','TIMED_OUT')",
            name="jobs_status_valid"),
        sa.CheckConstraint("kind IN ('run','sweep')", name="jobs_kind_valid"),
    )
    op.create_table(
        "bundles",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "attempts",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS),
        sa.Column("outcome", sa.String(16)),
        sa.Column("heartbeat_at", _TS),
    )
    op.create_table(
        "metrics",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
    )
    op.create_table(
        "artifacts",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )


def _sqlite_triggers() -> None:
    def trigger(name: str, when: str, table: str, cond: str, message: str) -> None:
        op.execute(f"CREATE TRIGGER {name} BEFORE {when} ON {table} FOR EACH ROW WHEN {cond} "
                   f"BEGIN SELECT RAISE(ABORT, 'illegal job transition: {message}'); END")

    for name, cond, message in UPDATE_RULES:
        trigger(f"jobs_{name}", "UPDATE", "jobs", cond, message)
    trigger("jobs_created_pending", "INSERT", "jobs", *INSERT_RULE)
    trigger("metrics_of_completing_attempt", "INSERT", "metrics", *METRICS_RULE)


def _pg_triggers() -> None:
    checks = "\n".join(
        f"  IF {cond} THEN RAISE EXCEPTION 'illegal job transition % -> %: {message}', "
        "OLD.status, NEW.status USING ERRCODE = 'check_violation'; END IF;"
        for _name, cond, message in UPDATE_RULES)
    op.execute(f"""CREATE FUNCTION pitwall_job_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{checks}
  RETURN NEW;
END $$""")
    op.execute("CREATE TRIGGER jobs_transition BEFORE UPDATE ON jobs FOR EACH ROW "
               "EXECUTE FUNCTION pitwall_job_update()")
    for fn, table, (cond, message) in (("pitwall_job_insert", "jobs", INSERT_RULE),
                                       ("pitwall_metrics_insert", "metrics", METRICS_RULE)):
        op.execute(f"""CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF {cond} THEN RAISE EXCEPTION 'illegal job transition: {message}'
    USING ERRCODE = 'check_violation'; END IF;
  RETURN NEW;
END $$""")
        op.execute(f"CREATE TRIGGER {fn} BEFORE INSERT ON {table} FOR EACH ROW "
                   f"EXECUTE FUNCTION {fn}()")


def upgrade() -> None:
    _tables()
    if op.get_bind().dialect.name == "postgresql":
        _pg_triggers()
    else:
        _sqlite_triggers()


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS jobs_transition ON jobs")
        for fn in ("pitwall_job_update", "pitwall_job_insert", "pitwall_metrics_insert"):
            op.execute(f"DROP FUNCTION IF EXISTS {fn}() CASCADE")
    for table in ("events", "artifacts", "metrics", "attempts", "bundles", "jobs", "researchers"):
        op.drop_table(table)
