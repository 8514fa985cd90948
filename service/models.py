"""The schema: runs, tasks, task attempts and workers, as SQLAlchemy 2 typed models.

The tables only ever come to exist through the Alembic migrations in ``migrations/``;
a test proves these models and the migrations agree. Names are chosen for people who
query run history with plain SQL (see the README).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class TaskStatus(enum.StrEnum):
    """Where a task stands. Stored as its string value."""

    QUEUED = "queued"  # waiting to be claimed for the first time (or released at a graceful stop)
    RUNNING = "running"  # leased by a supervisor that is executing it
    RETRYING = "retrying"  # an attempt failed or was lost; waiting out its backoff
    SUCCEEDED = "succeeded"  # finished with a result (terminal)
    FAILED = "failed"  # gave up: permanent error, timeout, or attempts used up (terminal)
    CANCELLED = "cancelled"  # cancelled by a person before it finished (terminal)


TERMINAL_TASK_STATUSES = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)
DUE_TASK_STATUSES = (TaskStatus.QUEUED, TaskStatus.RETRYING)


class RunStatus(enum.StrEnum):
    """Where a run stands. Stored as its string value."""

    RUNNING = "running"  # some task is not terminal yet
    COMPLETED = "completed"  # every task is terminal (succeeded or failed)
    CANCELLED = "cancelled"  # cancelled by a person


class Outcome(enum.StrEnum):
    """How one attempt ended. Stored as its string value."""

    RUNNING = "running"  # still executing (or its supervisor died and nobody reaped it yet)
    SUCCEEDED = "succeeded"  # returned a result
    FAILED = "failed"  # raised an error
    TIMED_OUT = "timed_out"  # ran past its timeout
    LOST = "lost"  # its lease expired or its supervisor died: the work was interrupted
    RELEASED = "released"  # handed back at a graceful stop; does not use up the attempt budget
    CANCELLED = "cancelled"  # its task or run was cancelled while it ran


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(100))
    total: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # A registered kind run once, as a task of its own, when the run completes.
    on_complete: Mapped[str | None] = mapped_column(String(100))
    # The hook's task (tasks.id; no foreign key, to keep the two tables acyclic).
    hook_task_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_runs_status", "status"),)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # NULL for a task submitted on its own (and for a run's completion hook).
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float | None] = mapped_column(Float)
    progress: Mapped[float] = mapped_column(Float, server_default=text("0"))
    checkpoint: Mapped[Any | None] = mapped_column(JSON)
    result: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[int | None] = mapped_column(ForeignKey("workers.id"))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (
        # A run's tiles in order, and its grouped status counts, are index lookups.
        Index("ix_tasks_run_position", "run_id", "position", unique=True),
        Index("ix_tasks_run_status", "run_id", "status"),
        # Claiming walks only due rows, oldest first.
        Index(
            "ix_tasks_due",
            "next_attempt_at",
            sqlite_where=text("status IN ('queued', 'retrying')"),
            postgresql_where=text("status IN ('queued', 'retrying')"),
        ),
        # Reaping walks only running rows, by expiry; heartbeats find a supervisor's leases.
        Index(
            "ix_tasks_lease_expiry",
            "lease_expires_at",
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_tasks_lease_owner", "lease_owner"),
    )


class TaskAttempt(Base):
    __tablename__ = "task_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_task_attempts_task_attempt", "task_id", "attempt", unique=True),)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_workers_host_live", "host", "stopped_at"),)
