"""Charge only the task at fault: charged/lost counts, isolation, per-task memory limits.

Attempts lost with their supervisor no longer use up a task's max_attempts; a task's own crash
(outcome ``crashed``) does. Existing history keeps what happened: attempts that were charged
under the old rules (failed, timed out, and lost, which used to count) are marked charged.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both backends: a batch "recreate" on SQLite would drop and
    # rebuild tasks, and the drop would cascade to task_attempts.
    op.add_column('tasks', sa.Column('charged', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('tasks', sa.Column('lost', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('tasks', sa.Column('isolated', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('tasks', sa.Column('memory_limit_mb', sa.Integer(), nullable=True))
    op.add_column('task_attempts', sa.Column('charged', sa.Boolean(), server_default=sa.false(), nullable=False))

    op.execute(
        "UPDATE task_attempts SET charged = (outcome IN ('failed', 'timed_out', 'lost'))"
    )
    op.execute(
        "UPDATE tasks SET charged = (SELECT count(*) FROM task_attempts a "
        "WHERE a.task_id = tasks.id AND a.charged)"
    )


def downgrade() -> None:
    op.drop_column('task_attempts', 'charged')
    for column in ('memory_limit_mb', 'isolated', 'lost', 'charged'):
        op.drop_column('tasks', column)
