"""One word per idea: supervisors; leases live by heartbeats; claims and checks use their indexes.

* ``workers`` becomes ``supervisors``, and ``tasks.lease_owner`` / ``task_attempts.worker_id``
  become ``supervisor_id``: the thing that leases tasks has one name everywhere.
* ``tasks.lease_expires_at`` goes: a lease lives while its supervisor's heartbeat_at keeps
  changing, so the heartbeat writes one row, not one per running task.
* ``supervisors.boot_id`` and ``start_ticks`` tell a live process from a reused pid without
  any wall clock.
* ``ix_tasks_due`` orders by (next_attempt_at, id); ``ix_tasks_running`` finds a supervisor's
  running tasks; the old expiry and owner indexes go.

Plain ALTER TABLE statements on both backends (SQLite 3.35+ renames and drops columns itself),
so no table is rebuilt.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = "status IN ('queued', 'retrying')"
RUNNING = "status = 'running'"


def upgrade() -> None:
    op.drop_index('ix_tasks_lease_expiry', table_name='tasks')
    op.drop_index('ix_tasks_lease_owner', table_name='tasks')
    op.drop_index('ix_tasks_due', table_name='tasks')
    op.drop_index('ix_workers_host_live', table_name='workers')
    op.rename_table('workers', 'supervisors')
    op.add_column('supervisors', sa.Column('boot_id', sa.String(length=64), nullable=True))
    op.add_column('supervisors', sa.Column('start_ticks', sa.BigInteger(), nullable=True))
    op.create_index('ix_supervisors_host_live', 'supervisors', ['host', 'stopped_at'])
    op.alter_column('tasks', 'lease_owner', new_column_name='supervisor_id')
    op.alter_column('task_attempts', 'worker_id', new_column_name='supervisor_id')
    op.drop_column('tasks', 'lease_expires_at')
    op.create_index('ix_tasks_due', 'tasks', ['next_attempt_at', 'id'],
                    sqlite_where=sa.text(DUE), postgresql_where=sa.text(DUE))
    op.create_index('ix_tasks_running', 'tasks', ['supervisor_id'],
                    sqlite_where=sa.text(RUNNING), postgresql_where=sa.text(RUNNING))


def downgrade() -> None:
    op.drop_index('ix_tasks_running', table_name='tasks')
    op.drop_index('ix_tasks_due', table_name='tasks')
    op.add_column('tasks', sa.Column('lease_expires_at', sa.DateTime(), nullable=True))
    op.alter_column('task_attempts', 'supervisor_id', new_column_name='worker_id')
    op.alter_column('tasks', 'supervisor_id', new_column_name='lease_owner')
    op.drop_index('ix_supervisors_host_live', table_name='supervisors')
    op.drop_column('supervisors', 'start_ticks')
    op.drop_column('supervisors', 'boot_id')
    op.rename_table('supervisors', 'workers')
    op.create_index('ix_workers_host_live', 'workers', ['host', 'stopped_at'])
    op.create_index('ix_tasks_due', 'tasks', ['next_attempt_at'],
                    sqlite_where=sa.text(DUE), postgresql_where=sa.text(DUE))
    op.create_index('ix_tasks_lease_owner', 'tasks', ['lease_owner'])
    op.create_index('ix_tasks_lease_expiry', 'tasks', ['lease_expires_at'],
                    sqlite_where=sa.text(RUNNING), postgresql_where=sa.text(RUNNING))
