"""The schema: runs, tasks, task attempts and supervisors, as SQLAlchemy Core tables declared by classes.

The tables only ever come to exist through the Alembic migrations in ``migrations/``;
a test proves these models and the migrations agree. Names are chosen for people who
query run history with plain SQL (see the README).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)


class TaskStatus(enum.StrEnum):
    """Where a task stands. Stored as its string value."""

    QUEUED = "queued"  # waiting to be claimed: new, or handed back (graceful stop, supervisor lost)
    RUNNING = "running"  # leased by a supervisor that is executing it
    RETRYING = "retrying"  # an attempt failed, timed out or crashed; waiting out its backoff
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
    DELETING = "deleting"  # ended long ago; retention is deleting it batch by batch (never retried or cancelled)


class Outcome(enum.StrEnum):
    """How one attempt ended. Stored as its string value.

    Charged outcomes (``task_attempts.charged``) use up one of the task's ``max_attempts``:
    the task itself was at fault. The others interrupted it through no fault of its own.
    """

    RUNNING = "running"  # still executing (or its supervisor died and nobody reaped it yet)
    SUCCEEDED = "succeeded"  # returned a result
    FAILED = "failed"  # raised an error (charged)
    TIMED_OUT = "timed_out"  # ran past its timeout; its process was stopped (charged)
    CRASHED = "crashed"  # its own process died: exit code, signal, memory limit (charged)
    LOST = "lost"  # its supervisor died, stopped heartbeating, or its shared process died (not charged)
    RELEASED = "released"  # handed back at a graceful stop (not charged)
    CANCELLED = "cancelled"  # its task or run was cancelled while it ran (not charged)


CHARGED_OUTCOMES = (Outcome.FAILED, Outcome.TIMED_OUT, Outcome.CRASHED)
LOG_TAIL_CHARS = 64 * 1024  # of an attempt's output, the last characters kept (task_attempts.logs)


# A count of characters a task wrote: past 2**31 on PostgreSQL's INTEGER it would be refused (and
# with it every heartbeat carrying it). SQLite's INTEGER holds 64 bits already.
COUNT = BigInteger().with_variant(Integer(), "sqlite")


if TYPE_CHECKING:  # the type checker reads the classes as the declarative models they stand for
    from sqlalchemy.orm import DeclarativeBase, Mapped
    from sqlalchemy.orm import mapped_column as col

    class Base(DeclarativeBase):
        pass
else:
    Mapped = Column  # annotations are never evaluated: ``Mapped[int | None]`` says the column may be NULL

    def col(*args: Any, **kwargs: Any) -> Any:
        """A column of the class it is declared in; its name is the attribute's, and it may be NULL
        only where its annotation says ``| None`` (see :class:`Base`)."""
        return Column(*args, **kwargs)

    class Base:
        """Makes each subclass's ``col`` attributes one :class:`~sqlalchemy.Table` (``__table__``), as a
        declarative base would, without the ORM: every statement here is Core, and importing
        ``sqlalchemy.orm`` cost every start of a worker 0.15 s. ``Task.id`` is the table's column,
        and ``select(Task)``, ``insert(Task)`` and ``update(Task)`` take the table."""

        metadata: ClassVar[MetaData] = MetaData()

        def __init_subclass__(cls, **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            columns = []
            for name, value in vars(cls).items():
                if isinstance(value, Column):
                    value.name = value.key = name
                    if not value.primary_key and "None" not in cls.__annotations__.get(name, ""):
                        value.nullable = False
                    columns.append(value)
            cls.__table__ = Table(cls.__tablename__, cls.metadata, *columns, *getattr(cls, "__table_args__", ()))

        @classmethod
        def __clause_element__(cls) -> Table:
            return cls.__table__


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = col(Integer, primary_key=True)
    name: Mapped[str | None] = col(String(200))
    status: Mapped[str] = col(String(16))
    kind: Mapped[str] = col(String(100))
    total: Mapped[int] = col(Integer)
    params: Mapped[dict[str, Any]] = col(JSON)
    # A registered kind run once, as a task of its own, when the run completes.
    on_complete: Mapped[str | None] = col(String(100))
    # The hook's task (tasks.id; no foreign key, to keep the two tables acyclic).
    hook_task_id: Mapped[int | None] = col(Integer)
    created_at: Mapped[datetime] = col(DateTime)
    # The start asked for (by the database's clock): no task of it starts before; NULL: at once.
    scheduled_for: Mapped[datetime | None] = col(DateTime)
    finished_at: Mapped[datetime | None] = col(DateTime)
    queue: Mapped[str] = col(String(100), server_default="default")  # where its tasks wait
    # Set while paused: none of its tasks starts (those running finish); NULL: not paused.
    paused_at: Mapped[datetime | None] = col(DateTime)

    __table_args__ = (
        Index("ix_runs_status", "status"),
        Index("ix_runs_paused", "id", sqlite_where=text("paused_at IS NOT NULL"),
              postgresql_where=text("paused_at IS NOT NULL")),
        # Retention walks finished runs by age.
        Index("ix_runs_finished", "finished_at", sqlite_where=text("status <> 'running'"),
              postgresql_where=text("status <> 'running'")),
    )


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = col(Integer, primary_key=True)
    # NULL for a task submitted on its own (and for a run's completion hook).
    run_id: Mapped[int | None] = col(ForeignKey("runs.id", ondelete="CASCADE"))
    position: Mapped[int] = col(Integer)  # 0-based order in its run (pages count from 1)
    kind: Mapped[str] = col(String(100))
    args: Mapped[dict[str, Any]] = col(JSON)
    # What a person calls it: given at submit, else a short form of its args; NULL for simulations.
    label: Mapped[str | None] = col(String(200))
    status: Mapped[str] = col(String(16))
    attempts: Mapped[int] = col(Integer, server_default=text("0"))  # times claimed
    max_attempts: Mapped[int] = col(Integer)
    # Attempts that used up the budget (failed, timed out, crashed): the task fails at max_attempts.
    charged: Mapped[int] = col(Integer, server_default=text("0"))
    # Attempts lost where the task might be at fault (its supervisor died, a process it shared or
    # reused crashed, no process started for it): never charged, but capped (storage.endings.MAX_LOST)
    # against a task that kills whatever runs it. A loss its supervisor caused on purpose is not counted.
    lost: Mapped[int] = col(Integer, server_default=text("0"))
    # Runs alone in a process of its own: it was in a shared process that crashed, so the next
    # crash, if any, is its own and charged exactly.
    isolated: Mapped[bool] = col(Boolean, server_default=false())
    timeout_s: Mapped[float | None] = col(Float)
    # Memory limit of the process running it, in MiB; NULL means the supervisor's (--memory-limit).
    memory_limit_mb: Mapped[int | None] = col(Integer)
    progress: Mapped[float] = col(Float, server_default=text("0"))
    # Characters of output its current attempt has written (kept or cut): the run page's ETag
    # changes when a task prints, without reading the logs themselves.
    output_chars: Mapped[int] = col(COUNT, server_default=text("0"))
    checkpoint: Mapped[Any | None] = col(JSON)
    result: Mapped[Any | None] = col(JSON)
    error: Mapped[str | None] = col(Text)
    # The supervisor holding its lease while it runs; NULL otherwise. A lease lives as long as
    # that supervisor's heartbeat_at keeps changing (see service.supervisor.liveness).
    supervisor_id: Mapped[int | None] = col(ForeignKey("supervisors.id"))
    # When a retrying (or delayed) task is due, by the database's clock (see storage.db.db_now);
    # NULL for a queued task that is due at once, whatever any clock says ...
    next_attempt_at: Mapped[datetime | None] = col(DateTime)
    # ... and since when such a task waits (by the database's clock): for people and the backlog
    # figure only, never to decide when it runs.
    queued_at: Mapped[datetime | None] = col(DateTime)
    # The start asked for at submit (kept after it starts, for history); NULL: at once.
    scheduled_for: Mapped[datetime | None] = col(DateTime)
    created_at: Mapped[datetime] = col(DateTime)
    started_at: Mapped[datetime | None] = col(DateTime)
    finished_at: Mapped[datetime | None] = col(DateTime)
    # Flow control (see service.storage.claims): the queue it waits in, its priority there (higher
    # first), the concurrency key whose limits it counts against (limit_keys), and a key that at
    # most one active (queued, retrying or running) task may hold at a time.
    queue: Mapped[str] = col(String(100), server_default="default")
    priority: Mapped[int] = col(Integer, server_default=text("0"))
    limit_key: Mapped[str | None] = col(String(200))
    unique_key: Mapped[str | None] = col(String(200))

    __table_args__ = (
        # A run's tiles in order, and its grouped status counts, are index lookups.
        Index("ix_tasks_run_position", "run_id", "position", unique=True),
        Index("ix_tasks_run_status", "run_id", "status"),
        # Claiming walks only due rows (the statuses are literals in the SQL sent, or SQLite cannot
        # match a partial index; see storage.due): those due by a time, earliest first ...
        Index(
            "ix_tasks_due",
            "next_attempt_at", "id",
            sqlite_where=text("status IN ('queued', 'retrying')"),
            postgresql_where=text("status IN ('queued', 'retrying')"),
        ),
        # ... then those due at once (ix_tasks_ready, below the class) ...
        # ... except that the longest waiting go first once they waited past their queue's age_s.
        Index(
            "ix_tasks_aged",
            "queue", "queued_at", "id",
            sqlite_where=text("status IN ('queued', 'retrying') AND next_attempt_at IS NULL"),
            postgresql_where=text("status IN ('queued', 'retrying') AND next_attempt_at IS NULL"),
        ),
        # At most one active task per unique key: the database refuses a second.
        Index(
            "ux_tasks_unique_active", "unique_key", unique=True,
            sqlite_where=text("unique_key IS NOT NULL AND status IN ('queued', 'retrying', 'running')"),
            postgresql_where=text("unique_key IS NOT NULL AND status IN ('queued', 'retrying', 'running')"),
        ),
        # Tasks submitted on their own (and completion hooks), newest first.
        Index("ix_tasks_single", "id", sqlite_where=text("run_id IS NULL"), postgresql_where=text("run_id IS NULL")),
        # Running tasks by the supervisor that leases them: heartbeats, lease checks, reclaims.
        Index(
            "ix_tasks_running",
            "supervisor_id",
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
    )


# ... due at once (no time: no clock decides), per queue, highest priority first, then in submission order.
Index("ix_tasks_ready", Task.queue, Task.priority.desc(), Task.id,
      sqlite_where=text("status IN ('queued', 'retrying') AND next_attempt_at IS NULL"),
      postgresql_where=text("status IN ('queued', 'retrying') AND next_attempt_at IS NULL"))


class TaskAttempt(Base):
    __tablename__ = "task_attempts"

    id: Mapped[int] = col(Integer, primary_key=True)
    task_id: Mapped[int] = col(ForeignKey("tasks.id", ondelete="CASCADE"))
    attempt: Mapped[int] = col(Integer)
    supervisor_id: Mapped[int | None] = col(ForeignKey("supervisors.id"))
    started_at: Mapped[datetime] = col(DateTime)
    finished_at: Mapped[datetime | None] = col(DateTime)
    outcome: Mapped[str] = col(String(16))
    # True when this attempt used up one of the task's max_attempts (see Outcome).
    charged: Mapped[bool] = col(Boolean, server_default=false())
    error: Mapped[str | None] = col(Text)  # one line, the same for alike failures
    traceback: Mapped[str | None] = col(Text)  # of a failed attempt, bounded
    # What the task wrote (logging, stdout, stderr), its last 64 KiB; logs_cut bytes were dropped before.
    logs: Mapped[str | None] = col(Text)
    logs_cut: Mapped[int] = col(COUNT, server_default=text("0"))
    # The queue and concurrency key it ran under: running attempts and starts per period are counted here.
    queue: Mapped[str] = col(String(100), server_default="default")
    limit_key: Mapped[str | None] = col(String(200))

    __table_args__ = (
        Index("ix_task_attempts_task_attempt", "task_id", "attempt", unique=True),
        Index("ix_task_attempts_supervisor", "supervisor_id"),  # retention: which supervisors are still named
        # Limits: running attempts per queue and per key, and starts per period.
        Index("ix_task_attempts_open_queue", "queue", sqlite_where=text("outcome = 'running'"),
              postgresql_where=text("outcome = 'running'")),
        Index("ix_task_attempts_open_key", "limit_key",
              sqlite_where=text("outcome = 'running' AND limit_key IS NOT NULL"),
              postgresql_where=text("outcome = 'running' AND limit_key IS NOT NULL")),
        Index("ix_task_attempts_queue_started", "queue", "started_at"),
        Index("ix_task_attempts_key_started", "limit_key", "started_at", sqlite_where=text("limit_key IS NOT NULL"),
              postgresql_where=text("limit_key IS NOT NULL")),
    )


class Queue(Base):
    """A named queue: its limits (NULL: none) and whether it is paused. A claim locks the row of a
    limited queue while it counts the queue's running attempts and recent starts."""

    __tablename__ = "queues"

    name: Mapped[str] = col(String(100), primary_key=True)
    concurrency: Mapped[int | None] = col(Integer)  # running attempts at once, across every host
    rate_count: Mapped[int | None] = col(Integer)  # starts at most per rate_period_s
    rate_period_s: Mapped[float | None] = col(Float)
    # A task waiting longer than this goes ahead of higher priorities (NULL: DEFAULT_AGE_S).
    age_s: Mapped[float | None] = col(Float)
    paused_at: Mapped[datetime | None] = col(DateTime)  # set while paused
    # Declared by a person (API, CLI, Python); once any queue is, submits to an unknown queue are refused.
    declared: Mapped[bool] = col(Boolean, server_default=false())
    created_at: Mapped[datetime] = col(DateTime)
    updated_at: Mapped[datetime] = col(DateTime)


class LimitKey(Base):
    """A concurrency key's limits: running attempts with it at once, and starts per period."""

    __tablename__ = "limit_keys"

    name: Mapped[str] = col(String(200), primary_key=True)
    concurrency: Mapped[int | None] = col(Integer)
    rate_count: Mapped[int | None] = col(Integer)
    rate_period_s: Mapped[float | None] = col(Float)
    updated_at: Mapped[datetime] = col(DateTime)


class IdempotencyKey(Base):
    """A submission made with an ``Idempotency-Key``: the same key again returns what it made."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = col(String(200), primary_key=True)
    request_hash: Mapped[str] = col(String(64))  # of the request, to refuse a different one
    run_id: Mapped[int | None] = col(ForeignKey("runs.id", ondelete="CASCADE"))
    task_id: Mapped[int | None] = col(ForeignKey("tasks.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = col(DateTime)


class SupervisorRow(Base):
    """One row per supervisor: the part of a `tenure worker` or `tenure serve` process that
    leases and runs tasks."""

    __tablename__ = "supervisors"

    id: Mapped[int] = col(Integer, primary_key=True)
    host: Mapped[str] = col(String(255))
    pid: Mapped[int] = col(Integer)
    # Which boot of the host, and when in it the process started (clock ticks since boot): what
    # tells a live supervisor from a reused pid without reading any wall clock.
    boot_id: Mapped[str | None] = col(String(64))
    start_ticks: Mapped[int | None] = col(BigInteger)
    started_at: Mapped[datetime] = col(DateTime)
    heartbeat_at: Mapped[datetime] = col(DateTime)
    # Its promise: how often it beats, and how long a silence of its heartbeat means it is dead.
    # Others judge it by these (NULL: a supervisor from before they were kept; its watcher's own TTL).
    heartbeat_s: Mapped[float | None] = col(Float)
    lease_ttl_s: Mapped[float | None] = col(Float)
    stopped_at: Mapped[datetime | None] = col(DateTime)

    __table_args__ = (Index("ix_supervisors_host_live", "host", "stopped_at"),)


class ScheduleTarget(enum.StrEnum):
    TASK = "task"  # each slot starts one task of a kind with args
    RUN = "run"  # each slot starts a whole run


class CatchUp(enum.StrEnum):
    """What happens to slots missed while nothing could fire them (see service.cron and storage.firing)."""

    NONE = "none"  # recorded as missed; nothing is created for them
    LATEST = "latest"  # the latest of them is created, the rest recorded as missed
    ALL = "all"  # each is created, up to the schedule's catch_up_max (the latest ones)


class Overlap(enum.StrEnum):
    """What happens at a slot while the work of the schedule's previous fire has not ended."""

    SKIP = "skip"  # recorded as skipped, with the reason
    ALLOW = "allow"  # started anyway, beside it
    QUEUE = "queue"  # started once the previous ends (one waits at most; later slots meanwhile are skipped)


class FireOutcome(enum.StrEnum):
    FIRED = "fired"  # its task or run was created
    QUEUED = "queued"  # waits for the previous fire's work to end (overlap queue)
    SKIPPED = "skipped"  # not created: the previous fire's work was still running (overlap skip)
    MISSED = "missed"  # not created: nothing ran at its time and the catch-up policy left it out
    FAILED = "failed"  # could not be created (its kind is not registered any more, say): the reason says


class Schedule(Base):
    """A cron expression in a time zone, what each slot starts, and its policies."""

    __tablename__ = "schedules"

    id: Mapped[int] = col(Integer, primary_key=True)
    name: Mapped[str] = col(String(200))
    cron: Mapped[str] = col(String(200))
    timezone: Mapped[str] = col(String(64))
    target: Mapped[str] = col(String(8))  # ScheduleTarget
    kind: Mapped[str] = col(String(100))
    # What a slot creates, checked when the schedule was made: a task's row, or a run's plan.
    spec: Mapped[dict[str, Any]] = col(JSON)
    catch_up: Mapped[str] = col(String(8))  # CatchUp
    catch_up_max: Mapped[int] = col(Integer)
    overlap: Mapped[str] = col(String(8))  # Overlap
    # A slot fired later than this after its time was missed (the catch-up policy decides).
    grace_s: Mapped[float] = col(Float)
    paused: Mapped[bool] = col(Boolean, server_default=false())
    origin: Mapped[str] = col(String(8))  # "code" (synced from a definition at start) or "api"
    definition_hash: Mapped[str] = col(String(64))  # of what defines it: a changed definition re-syncs
    # The next slot not yet handled (UTC, by the database's clock): every slot before it has its fire row.
    next_slot_at: Mapped[datetime | None] = col(DateTime)
    last_fire_id: Mapped[int | None] = col(Integer)  # the latest fire that created work (overlap)
    waiting_fire_id: Mapped[int | None] = col(Integer)  # a fire queued behind it (overlap queue)
    created_at: Mapped[datetime] = col(DateTime)
    updated_at: Mapped[datetime] = col(DateTime)

    __table_args__ = (
        Index("ux_schedules_name", "name", unique=True),
        Index("ix_schedules_next", "paused", "next_slot_at"),
        Index("ix_schedules_waiting", "waiting_fire_id", sqlite_where=text("waiting_fire_id IS NOT NULL"),
              postgresql_where=text("waiting_fire_id IS NOT NULL")),
    )


class ScheduleFire(Base):
    """One row per slot of a schedule (or per span of missed slots), and per fire by hand.

    The unique key on (schedule_id, slot_at) is the exactly-once guarantee: the row, the work it
    creates and the schedule's advanced cursor are written in one transaction, and a second
    writer of the same slot is refused by the database, whatever crashed or stalled.
    """

    __tablename__ = "schedule_fires"

    id: Mapped[int] = col(Integer, primary_key=True)
    schedule_id: Mapped[int] = col(ForeignKey("schedules.id", ondelete="CASCADE"))
    slot_at: Mapped[datetime | None] = col(DateTime)  # UTC; NULL for a fire by hand
    slots: Mapped[int] = col(Integer, server_default=text("1"))  # >1: a span of missed slots ...
    last_slot_at: Mapped[datetime | None] = col(DateTime)  # ... ending at this slot
    outcome: Mapped[str] = col(String(8))  # FireOutcome
    catch_up: Mapped[bool] = col(Boolean, server_default=false())  # created late, for a missed slot
    reason: Mapped[str | None] = col(Text)
    fired_at: Mapped[datetime] = col(DateTime)  # when this row was written (or its work created)
    run_id: Mapped[int | None] = col(ForeignKey("runs.id", ondelete="CASCADE"))
    task_id: Mapped[int | None] = col(ForeignKey("tasks.id", ondelete="CASCADE"))

    __table_args__ = (
        Index("ux_schedule_fires_slot", "schedule_id", "slot_at", unique=True),
        Index("ix_schedule_fires_latest", "schedule_id", "id"),
        Index("ix_schedule_fires_run", "run_id"),
        Index("ix_schedule_fires_task", "task_id"),
    )
