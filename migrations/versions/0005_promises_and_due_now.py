"""Each supervisor's promise (heartbeat interval, lease TTL) in its row; tasks due at once carry no time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = "status IN ('queued', 'retrying')"


def upgrade() -> None:
    # A supervisor is judged by its own promise, not by its watcher's settings (NULL: a supervisor
    # from before 0005, judged by the watcher's TTL as it was then).
    with op.batch_alter_table('supervisors') as batch:
        batch.add_column(sa.Column('heartbeat_s', sa.Float(), nullable=True))
        batch.add_column(sa.Column('lease_ttl_s', sa.Float(), nullable=True))
    # A task due at once has no due time (next_attempt_at IS NULL): no process's clock decides when
    # it may start. Claims walk these in submission order; queued_at says since when it waits.
    with op.batch_alter_table('tasks') as batch:
        batch.add_column(sa.Column('queued_at', sa.DateTime(), nullable=True))
    op.create_index('ix_tasks_ready', 'tasks', ['id'], sqlite_where=sa.text(f"{DUE} AND next_attempt_at IS NULL"),
                    postgresql_where=sa.text(f"{DUE} AND next_attempt_at IS NULL"))
    # What was queued to run at once before 0005 (its due time was "now" when it was written).
    op.execute("UPDATE tasks SET queued_at = COALESCE(next_attempt_at, created_at), next_attempt_at = NULL "
               "WHERE status = 'queued'")
    # Counts of characters a task wrote can pass 2**31; PostgreSQL's INTEGER would refuse them (SQLite's
    # holds 64 bits: no rebuild of its tables there).
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column('tasks', 'output_chars', type_=sa.BigInteger())
        op.alter_column('task_attempts', 'logs_cut', type_=sa.BigInteger())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column('task_attempts', 'logs_cut', type_=sa.Integer())
        op.alter_column('tasks', 'output_chars', type_=sa.Integer())
    op.execute("UPDATE tasks SET next_attempt_at = created_at WHERE status IN ('queued', 'retrying') "
               "AND next_attempt_at IS NULL")
    op.drop_index('ix_tasks_ready', table_name='tasks')
    with op.batch_alter_table('tasks') as batch:
        batch.drop_column('queued_at')
    with op.batch_alter_table('supervisors') as batch:
        batch.drop_column('lease_ttl_s')
        batch.drop_column('heartbeat_s')
