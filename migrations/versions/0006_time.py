"""Time: tasks and runs that start later, and schedules with one fire row per slot.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The start a person asked for; the claim itself reads next_attempt_at, as for a retry.
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('scheduled_for', sa.DateTime(), nullable=True))
    with op.batch_alter_table('tasks') as batch:
        batch.add_column(sa.Column('scheduled_for', sa.DateTime(), nullable=True))
    op.create_table(
        'schedules',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('cron', sa.String(length=200), nullable=False),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('target', sa.String(length=8), nullable=False),
        sa.Column('kind', sa.String(length=100), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('catch_up', sa.String(length=8), nullable=False),
        sa.Column('catch_up_max', sa.Integer(), nullable=False),
        sa.Column('overlap', sa.String(length=8), nullable=False),
        sa.Column('grace_s', sa.Float(), nullable=False),
        sa.Column('paused', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('origin', sa.String(length=8), nullable=False),
        sa.Column('definition_hash', sa.String(length=64), nullable=False),
        sa.Column('next_slot_at', sa.DateTime(), nullable=True),
        sa.Column('last_fire_id', sa.Integer(), nullable=True),
        sa.Column('waiting_fire_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ux_schedules_name', 'schedules', ['name'], unique=True)
    op.create_index('ix_schedules_next', 'schedules', ['paused', 'next_slot_at'])
    op.create_index('ix_schedules_waiting', 'schedules', ['waiting_fire_id'],
                    sqlite_where=sa.text('waiting_fire_id IS NOT NULL'),
                    postgresql_where=sa.text('waiting_fire_id IS NOT NULL'))
    op.create_table(
        'schedule_fires',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('schedule_id', sa.Integer(), nullable=False),
        sa.Column('slot_at', sa.DateTime(), nullable=True),
        sa.Column('slots', sa.Integer(), server_default=sa.text('1'), nullable=False),
        sa.Column('last_slot_at', sa.DateTime(), nullable=True),
        sa.Column('outcome', sa.String(length=8), nullable=False),
        sa.Column('catch_up', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('fired_at', sa.DateTime(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.Column('task_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    # Exactly one row per slot, enforced by the database (see storage.firing).
    op.create_index('ux_schedule_fires_slot', 'schedule_fires', ['schedule_id', 'slot_at'], unique=True)
    op.create_index('ix_schedule_fires_latest', 'schedule_fires', ['schedule_id', 'id'])
    op.create_index('ix_schedule_fires_run', 'schedule_fires', ['run_id'])
    op.create_index('ix_schedule_fires_task', 'schedule_fires', ['task_id'])


def downgrade() -> None:
    op.drop_table('schedule_fires')
    op.drop_table('schedules')
    with op.batch_alter_table('tasks') as batch:
        batch.drop_column('scheduled_for')
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('scheduled_for')
