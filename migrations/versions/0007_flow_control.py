"""Flow control: named queues with limits and pause, priorities, concurrency keys, rates, unique tasks.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = "status IN ('queued', 'retrying')"
ACTIVE = "status IN ('queued', 'retrying', 'running')"


def upgrade() -> None:
    # One row per queue: its limits and whether it is paused. Claims lock the row of a limited queue
    # (FOR UPDATE) while they count its running attempts: that is what makes the limit global.
    op.create_table(
        'queues',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('concurrency', sa.Integer(), nullable=True),
        sa.Column('rate_count', sa.Integer(), nullable=True),
        sa.Column('rate_period_s', sa.Float(), nullable=True),
        sa.Column('age_s', sa.Float(), nullable=True),
        sa.Column('paused_at', sa.DateTime(), nullable=True),
        sa.Column('declared', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.execute("INSERT INTO queues (name, declared, created_at, updated_at) "
               "VALUES ('default', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    # One row per concurrency key that has a limit (of running attempts, or of starts per period).
    op.create_table(
        'limit_keys',
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('concurrency', sa.Integer(), nullable=True),
        sa.Column('rate_count', sa.Integer(), nullable=True),
        sa.Column('rate_period_s', sa.Float(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('queue', sa.String(length=100), server_default='default', nullable=False))
        batch.add_column(sa.Column('paused_at', sa.DateTime(), nullable=True))
    op.create_index('ix_runs_paused', 'runs', ['id'], sqlite_where=sa.text("paused_at IS NOT NULL"),
                    postgresql_where=sa.text("paused_at IS NOT NULL"))
    with op.batch_alter_table('tasks') as batch:
        batch.add_column(sa.Column('queue', sa.String(length=100), server_default='default', nullable=False))
        batch.add_column(sa.Column('priority', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch.add_column(sa.Column('limit_key', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('unique_key', sa.String(length=200), nullable=True))
    # Due at once, per queue: highest priority first, then submission order ...
    op.drop_index('ix_tasks_ready', table_name='tasks')
    op.create_index('ix_tasks_ready', 'tasks', ['queue', sa.text('priority DESC'), 'id'],
                    sqlite_where=sa.text(f"{DUE} AND next_attempt_at IS NULL"),
                    postgresql_where=sa.text(f"{DUE} AND next_attempt_at IS NULL"))
    # ... and, per queue, the longest waiting first (ageing: nothing starves behind higher priorities).
    op.create_index('ix_tasks_aged', 'tasks', ['queue', 'queued_at', 'id'],
                    sqlite_where=sa.text(f"{DUE} AND next_attempt_at IS NULL"),
                    postgresql_where=sa.text(f"{DUE} AND next_attempt_at IS NULL"))
    # At most one active task per unique key, enforced by the database.
    op.create_index('ux_tasks_unique_active', 'tasks', ['unique_key'], unique=True,
                    sqlite_where=sa.text(f"unique_key IS NOT NULL AND {ACTIVE}"),
                    postgresql_where=sa.text(f"unique_key IS NOT NULL AND {ACTIVE}"))
    # Attempts carry the queue and key they ran under: limits are counted from attempt rows.
    with op.batch_alter_table('task_attempts') as batch:
        batch.add_column(sa.Column('queue', sa.String(length=100), server_default='default', nullable=False))
        batch.add_column(sa.Column('limit_key', sa.String(length=200), nullable=True))
    op.create_index('ix_task_attempts_open_queue', 'task_attempts', ['queue'],
                    sqlite_where=sa.text("outcome = 'running'"), postgresql_where=sa.text("outcome = 'running'"))
    op.create_index('ix_task_attempts_open_key', 'task_attempts', ['limit_key'],
                    sqlite_where=sa.text("outcome = 'running' AND limit_key IS NOT NULL"),
                    postgresql_where=sa.text("outcome = 'running' AND limit_key IS NOT NULL"))
    op.create_index('ix_task_attempts_queue_started', 'task_attempts', ['queue', 'started_at'])
    op.create_index('ix_task_attempts_key_started', 'task_attempts', ['limit_key', 'started_at'],
                    sqlite_where=sa.text("limit_key IS NOT NULL"), postgresql_where=sa.text("limit_key IS NOT NULL"))


def downgrade() -> None:
    op.drop_index('ix_task_attempts_key_started', table_name='task_attempts')
    op.drop_index('ix_task_attempts_queue_started', table_name='task_attempts')
    op.drop_index('ix_task_attempts_open_key', table_name='task_attempts')
    op.drop_index('ix_task_attempts_open_queue', table_name='task_attempts')
    with op.batch_alter_table('task_attempts') as batch:
        batch.drop_column('limit_key')
        batch.drop_column('queue')
    op.drop_index('ux_tasks_unique_active', table_name='tasks')
    op.drop_index('ix_tasks_aged', table_name='tasks')
    op.drop_index('ix_tasks_ready', table_name='tasks')
    with op.batch_alter_table('tasks') as batch:
        batch.drop_column('unique_key')
        batch.drop_column('limit_key')
        batch.drop_column('priority')
        batch.drop_column('queue')
    op.create_index('ix_tasks_ready', 'tasks', ['id'], sqlite_where=sa.text(f"{DUE} AND next_attempt_at IS NULL"),
                    postgresql_where=sa.text(f"{DUE} AND next_attempt_at IS NULL"))
    op.drop_index('ix_runs_paused', table_name='runs')
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('paused_at')
        batch.drop_column('queue')
    op.drop_table('limit_keys')
    op.drop_table('queues')
