"""Real work: task labels and output counts, each attempt's logs and traceback, idempotency keys, finished-time indexes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:00:00
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('tasks', sa.Column('label', sa.String(length=200), nullable=True))
    op.add_column('tasks', sa.Column('output_chars', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('task_attempts', sa.Column('traceback', sa.Text(), nullable=True))
    op.add_column('task_attempts', sa.Column('logs', sa.Text(), nullable=True))
    op.add_column('task_attempts', sa.Column('logs_cut', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.create_table('idempotency_keys',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key')
    )
    # Retention walks finished runs and single tasks by age; single tasks are listed newest first.
    op.create_index('ix_runs_finished', 'runs', ['finished_at'], sqlite_where=sa.text("status <> 'running'"),
                    postgresql_where=sa.text("status <> 'running'"))
    op.create_index('ix_tasks_single', 'tasks', ['id'], sqlite_where=sa.text('run_id IS NULL'),
                    postgresql_where=sa.text('run_id IS NULL'))
    op.create_index('ix_task_attempts_supervisor', 'task_attempts', ['supervisor_id'])
    _ungroup_errors()


# How sleep decorated its errors until 0004: "<reason> (at 72%)", "connection reset while
# working (at 40%); a retry resumes". Only those places: other text is the task's own.
_AT = re.compile(r" \(at \d{1,3}%\)(?=$|; a retry resumes$)")


def _ungroup_errors() -> None:
    """Errors stored before 0004 carried the progress at which they happened, so no two
    grouped; strip it, as tenure stores them now (progress has its own column)."""
    conn = op.get_bind()
    for table in ('tasks', 'task_attempts'):
        t = sa.table(table, sa.column('id', sa.Integer()), sa.column('error', sa.Text()))
        rows = conn.execute(sa.select(t.c.id, t.c.error).where(t.c.error.like('% (at %'))).all()
        for row_id, error in rows:
            plain = _AT.sub('', error, count=1)
            if plain != error:
                conn.execute(sa.update(t).where(t.c.id == row_id).values(error=plain))


def downgrade() -> None:
    op.drop_index('ix_task_attempts_supervisor', table_name='task_attempts')
    op.drop_index('ix_tasks_single', table_name='tasks')
    op.drop_index('ix_runs_finished', table_name='runs')
    op.drop_table('idempotency_keys')
    op.drop_column('task_attempts', 'logs_cut')
    op.drop_column('task_attempts', 'logs')
    op.drop_column('task_attempts', 'traceback')
    op.drop_column('tasks', 'output_chars')
    op.drop_column('tasks', 'label')
