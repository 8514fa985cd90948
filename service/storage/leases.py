"""The lease protocol: every statement a supervisor runs, as verbs, one transaction each.

A task is leased by a supervisor (``tasks.supervisor_id``) for one attempt (``attempts``).
Every write to a leased row is a compare-and-set on (id, supervisor_id, attempts, status =
'running'); a write that matches no row comes from a lease that was lost (reclaimed,
cancelled) and changes nothing, so no task completes twice. Locks follow the order stated in
:mod:`service.storage`: runs, then tasks by id, then attempts, then supervisors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    Text,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal_column,
    select,
    update,
)

from service.storage import claims, due, looks, notify
from service.storage.db import db_now, read_tx, status_is, text_tail, write_tx
from service.storage.endings import MAX_LOST, End, end_attempts, leased_by
from service.storage.errors import translated
from service.storage.models import (
    LOG_TAIL_CHARS,
    Outcome,
    SupervisorRow,
    Task,
    TaskAttempt,
)

log = logging.getLogger("tenure.leases")

DUE = due.DUE

Key = tuple[int, int]


@dataclass(frozen=True)
class Lease:
    """One claimed attempt of a task: everything needed to run it and to fence its writes."""

    task_id: int
    attempt: int  # tasks.attempts after the claim: this attempt's number, 1-based
    charged: int  # earlier attempts charged against max_attempts (failed, timed out, crashed)
    lost: int  # earlier attempts lost through no fault of the task
    max_attempts: int
    run_id: int | None
    position: int
    kind: str
    args: dict[str, Any]
    checkpoint: Any
    timeout_s: float | None
    isolated: bool = False  # must run alone in a process of its own
    memory_limit_mb: int | None = None  # None: the supervisor's limit
    waited_s: float | None = None  # a first attempt: submission to this claim, by the database's clock
    queue: str = "default"
    limit_key: str | None = None
    limited: bool = False  # counted against a limit: its end rings the other supervisors

    @property
    def key(self) -> Key:
        """(task id, attempt): what identifies this execution everywhere."""
        return (self.task_id, self.attempt)


@dataclass(frozen=True)
class LiveSupervisor:
    id: int
    host: str
    pid: int
    boot_id: str | None
    start_ticks: int | None


class Holder(NamedTuple):
    """A lease holder's heartbeat as last written, and the TTL it promised (None: not kept in its row)."""

    heartbeat_at: datetime
    lease_ttl_s: float | None


class Beat(NamedTuple):
    """What a heartbeat learned: the leases the supervisor still holds, and whether its row was
    still alive (False: another supervisor judged it dead, or its row was deleted)."""

    held: set[Key]
    alive: bool


class Leases:
    """Register, claim, heartbeat, end attempts and reclaim: the supervisor's side of the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.turn = 0  # which queue gets free slots first at the next claim (it turns at each)

    # -- supervisors ----------------------------------------------------------------------

    @translated
    def register(self, host: str, pid: int, boot_id: str | None, start_ticks: int | None, *,
                 heartbeat_s: float | None = None, lease_ttl_s: float | None = None) -> int:
        """Insert this supervisor's ``supervisors`` row, with its promise (how often it beats, and
        after how long a silence others may judge it dead); returns its id (what its leases carry)."""
        with write_tx(self.engine) as conn:
            return int(
                conn.execute(
                    insert(SupervisorRow)
                    .values(host=host, pid=pid, boot_id=boot_id, start_ticks=start_ticks, heartbeat_s=heartbeat_s,
                            lease_ttl_s=lease_ttl_s, started_at=db_now(), heartbeat_at=db_now())
                    .returning(SupervisorRow.id)
                ).scalar_one()
            )

    @translated
    def register_again(self, supervisor_id: int, host: str, pid: int, boot_id: str | None, start_ticks: int | None,
                       *, heartbeat_s: float | None = None, lease_ttl_s: float | None = None) -> None:
        """Make a supervisor that was judged dead (marked stopped) alive again under the same id, or
        insert its row again under that id if it was deleted (pruned). Atomic.

        Safe because every write to a leased row is fenced by the attempt too: a lease taken
        from it while it was thought dead was re-claimed as a new attempt, whoever holds it now.
        """
        with write_tx(self.engine) as conn:
            revived = conn.execute(
                update(SupervisorRow).where(SupervisorRow.id == supervisor_id)
                .values(stopped_at=None, heartbeat_at=db_now(), heartbeat_s=heartbeat_s, lease_ttl_s=lease_ttl_s)
            ).rowcount
            if not revived:
                conn.execute(insert(SupervisorRow).values(
                    id=supervisor_id, host=host, pid=pid, boot_id=boot_id, start_ticks=start_ticks,
                    heartbeat_s=heartbeat_s, lease_ttl_s=lease_ttl_s, started_at=db_now(), heartbeat_at=db_now()))

    @translated
    def live_supervisors_on(self, host: str, except_id: int) -> list[LiveSupervisor]:
        """Supervisors on ``host`` not marked stopped, other than ``except_id``; [] when none."""
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(SupervisorRow.id, SupervisorRow.host, SupervisorRow.pid, SupervisorRow.boot_id,
                       SupervisorRow.start_ticks)
                .where(SupervisorRow.host == host, SupervisorRow.stopped_at.is_(None), SupervisorRow.id != except_id)
            ).all()
        return [LiveSupervisor(*row) for row in rows]

    @translated
    def lease_holders(self) -> dict[int, Holder]:
        """{supervisor id: its heartbeat and promised TTL} of every supervisor holding a running
        task; {} when none.

        Walks ``ix_tasks_running`` (running rows only), whatever the number of finished tasks.
        """
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(SupervisorRow.id, SupervisorRow.heartbeat_at, SupervisorRow.lease_ttl_s)
                .where(SupervisorRow.id.in_(
                    select(Task.supervisor_id).where(status_is(Task.status, "running")).distinct()
                ))
            ).all()
        return {supervisor_id: Holder(beat, ttl) for supervisor_id, beat, ttl in rows}

    @translated
    def held(self, supervisor_id: int) -> set[Key]:
        """The (task_id, attempt) pairs this supervisor still leases, from one index lookup.

        Read only. An attempt missing from it was cancelled or reclaimed: its execution must
        stop. Empty when it holds nothing.
        """
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(Task.id, Task.attempts).where(
                    Task.supervisor_id == supervisor_id, status_is(Task.status, "running")
                )
            ).all()
        return {(r.id, r.attempts) for r in rows}

    @translated
    def stop_supervisor(self, supervisor_id: int) -> None:
        """Mark the supervisor stopped. A no-op for an unknown id."""
        with write_tx(self.engine) as conn:
            conn.execute(update(SupervisorRow).where(SupervisorRow.id == supervisor_id)
                         .values(stopped_at=db_now()))

    # -- claim and heartbeat ------------------------------------------------------------

    @translated
    def anything_due(self, served: Iterable[str] | None = None) -> looks.Look:
        """What a claim could start in the queues ``served`` (None: every queue), from one read of
        index probes that takes no write lock. Falsy when nothing can start now."""
        with read_tx(self.engine) as conn:
            return looks.look(conn, served)

    @translated
    def claim(self, supervisor_id: int, limit: int, found: looks.Look | None = None, *,
              served: Iterable[str] | None = None, rotate: int | None = None) -> list[Lease]:
        """Lease up to ``limit`` due tasks, in the order and within the limits that
        :mod:`service.storage.claims` states.

        ``found`` is what :meth:`anything_due` just said (read again when None). Atomic: the tasks
        turn ``running`` under this supervisor's lease and each gets an open ``task_attempts``
        row, all in one write transaction. On PostgreSQL the candidate rows are locked ``FOR
        UPDATE SKIP LOCKED``, so concurrent claimers never wait on or take the same row.
        Returns [] when nothing can start.
        """
        return self.claim_within(supervisor_id, limit, found, served=served, rotate=rotate)[0]

    @translated
    def claim_within(self, supervisor_id: int, limit: int, found: looks.Look | None = None, *,
                     served: Iterable[str] | None = None,
                     rotate: int | None = None) -> tuple[list[Lease], looks.Claimed]:
        """:meth:`claim`, with what the claim learned: whether limits held work back, and when a
        rate window frees a start. ``rotate`` (default: turns at each claim) picks the queue
        that gets the free slots first."""
        if rotate is None:
            rotate, self.turn = self.turn, self.turn + 1
        if limit <= 0:
            return [], looks.Claimed()
        if found is None:
            found = self.anything_due(served)
        if not found:
            return [], looks.Claimed(held_back=found.blocked, reopen_at=None)
        with write_tx(self.engine) as conn:
            got = claims.claim(conn, supervisor_id, limit, found, rotate)
        limited = {q.name for q in found.queues if q.limited}
        leases = [
            Lease(
                task_id=r.id, attempt=r.attempts, charged=r.charged, lost=r.lost,
                max_attempts=r.max_attempts, run_id=r.run_id, position=r.position, kind=r.kind,
                args=r.args or {}, checkpoint=r.checkpoint, timeout_s=r.timeout_s,
                isolated=bool(r.isolated), memory_limit_mb=r.memory_limit_mb,
                waited_s=(r.started_at - r.created_at).total_seconds() if r.attempts == 1 else None,
                queue=r.queue, limit_key=r.limit_key, limited=r.limit_key is not None or r.queue in limited,
            )
            for r in got.rows
        ]
        leases.sort(key=lambda lease: (lease.run_id or 0, lease.position))
        return leases, got

    @translated
    def heartbeat(
        self, supervisor_id: int, updates: Sequence[tuple[int, int, float, Any]] = (),
        logs: Sequence[tuple[int, int, str, int, bool]] = (),
    ) -> Beat:
        """Show this supervisor is alive, store progress, checkpoints and output; what it holds.

        One write to its ``supervisors`` row, however many tasks it runs (a lease lives while
        that row's heartbeat_at keeps changing), plus one fenced update per attempt in
        ``updates`` — (task_id, attempt, progress, checkpoint) that changed since the last
        beat — in task id order, and of each attempt in ``logs`` — (task_id, attempt, text
        written since the last beat, characters written in all, whether the text is the whole
        kept tail) — whose output grew: the new text is appended to the stored output, which
        keeps its last :data:`LOG_TAIL_CHARS`. Atomic. Returns the (task_id, attempt) pairs the
        supervisor still holds (an attempt missing from them has lost its lease and must stop), and
        whether its row was alive: a row marked stopped (others judged it dead) or deleted is not
        written, and the supervisor should :meth:`register_again`.
        """
        rows: dict[tuple[int, int], dict[str, Any]] = {}
        for task_id, attempt, progress, checkpoint in updates:
            rows[(task_id, attempt)] = {"b_id": task_id, "b_holder": supervisor_id, "b_attempt": attempt,
                                        "b_moved": True, "b_progress": progress, "b_checkpoint": checkpoint,
                                        "b_wrote": False, "b_chars": 0}
        for task_id, attempt, _, total, _ in logs:
            row = rows.setdefault((task_id, attempt), {"b_id": task_id, "b_holder": supervisor_id, "b_attempt": attempt,
                                                       "b_moved": False, "b_progress": 0.0, "b_checkpoint": None})
            row.update(b_wrote=True, b_chars=total)
        with write_tx(self.engine) as conn:
            if rows:  # one statement over the tasks, in id order (the lock order), then their attempts
                conn.execute(_BEAT_TASKS, [rows[key] for key in sorted(rows)])
            if logs:
                conn.execute(_BEAT_LOGS, [{"b_id": t, "b_attempt": a, "b_text": text, "b_total": total,
                                           "b_whole": whole} for t, a, text, total, whole in sorted(logs)])
            alive = conn.execute(
                update(SupervisorRow).where(SupervisorRow.id == supervisor_id, SupervisorRow.stopped_at.is_(None))
                .values(heartbeat_at=db_now())
            ).rowcount
            held = conn.execute(
                select(Task.id, Task.attempts).where(Task.supervisor_id == supervisor_id,
                                                     status_is(Task.status, "running"))
            ).all()
        return Beat({(r.id, r.attempts) for r in held}, bool(alive))

    # -- ending attempts ----------------------------------------------------------------

    @translated
    def end_attempts(self, holder: int, ends: Sequence[End]) -> set[Key]:
        """Record how these attempts ended, in one transaction (see :mod:`service.storage.endings`).

        Each end is fenced by (task, ``holder``, attempt): one whose lease was lost writes nothing
        and is missing from the result. Atomic: on an error nothing of the batch is written.
        """
        with write_tx(self.engine) as conn:
            applied = end_attempts(conn, holder, ends)
        for e in ends:
            if e.key not in applied:
                log.warning("attempt.end_fenced task=%s attempt=%s supervisor=%s outcome=%s: lease lost, "
                            "write dropped", e.task_id, e.attempt, holder, e.outcome.value)
        return applied

    def finish(self, lease: Lease, holder: int, *, outcome: Outcome, **fields: Any) -> bool:
        """One attempt's end (the fields of :class:`End` beyond its lease); False when its lease was lost."""
        end = End(task_id=lease.task_id, attempt=lease.attempt, run_id=lease.run_id, outcome=outcome,
                  lost_before=lease.lost, limited=lease.limited, **fields)
        return bool(self.end_attempts(holder, [end]))

    # -- reclaiming the leases of the dead ------------------------------------------------

    @translated
    def reclaim_supervisor(self, dead_id: int, reason: str, *, judged: datetime | None = None) -> list[Key]:
        """Take back every lease of a supervisor found dead, and mark it stopped.

        Each attempt ends ``lost``, not charged but counted (the task may be what killed it): its
        task is due again at once, or fails after :data:`MAX_LOST` such losses. With ``judged``
        (the ``heartbeat_at`` its silence was measured on) it is a compare-and-set: a supervisor
        whose heartbeat changed since, however late, keeps everything, and nothing is written.
        Atomic. Returns the (task_id, attempt) pairs reclaimed; [] when it held none (or beat).
        """
        try:
            with write_tx(self.engine) as conn:
                ends = [End(task_id=task_id, attempt=attempt, run_id=run_id, outcome=Outcome.LOST, error=reason,
                            counted=True, lost_before=lost)
                        for task_id, attempt, run_id, lost in leased_by(conn, dead_id)]
                lost_keys = end_attempts(conn, dead_id, ends)
                # Last, by the lock order; the heartbeat's own write to this row waits for ours, or came first.
                stopped = update(SupervisorRow).where(SupervisorRow.id == dead_id)
                if judged is not None:
                    stopped = stopped.where(SupervisorRow.heartbeat_at == judged)
                if not conn.execute(stopped.values(stopped_at=func.coalesce(SupervisorRow.stopped_at, db_now())))\
                        .rowcount and judged is not None:
                    raise _BeatMeanwhile
        except _BeatMeanwhile:
            log.info("supervisor.not_reclaimed dead=%s: its heartbeat changed since it was judged", dead_id)
            return []
        for task_id, attempt in sorted(lost_keys):
            log.info("lease.lost task=%s attempt=%s supervisor=%s: %s", task_id, attempt, dead_id, reason)
        return sorted(lost_keys)

    @translated
    def requeue_stepped(self, horizon_s: float) -> int:
        """Make due now any retry due more than ``horizon_s`` from now; returns how many.

        No backoff is ever that long, so such a retry was scheduled by a clock that has since
        stepped back (or by a process whose clock runs ahead): without this, a backward step of
        two hours would hold its retries for two hours. A start a person asked for (a queued task
        with a due time) may be any distance away and is never touched.
        """
        # The IN list matches ix_tasks_due as sent; the second term keeps to retries.
        ahead = (status_is(Task.status, *DUE), Task.status == literal_column("'retrying'"),
                 Task.next_attempt_at > db_now(horizon_s))
        with read_tx(self.engine) as conn:  # a read first: the write lock only when there is work
            if not conn.execute(select(exists(select(Task.id).where(*ahead)))).scalar():
                return 0
        with write_tx(self.engine) as conn:
            changed = conn.execute(update(Task).where(*ahead).values(next_attempt_at=None, queued_at=db_now())).rowcount
            if changed:
                notify.notify(conn)
        return int(changed)


class _BeatMeanwhile(Exception):
    """A reclaim found its supervisor's heartbeat changed since it was judged: roll back."""


# Built once: building a statement per call costs more than running it.
_BEAT_TASKS = (
    update(Task)
    .where((Task.id == bindparam("b_id")) & (Task.supervisor_id == bindparam("b_holder"))
           & (Task.attempts == bindparam("b_attempt")) & status_is(Task.status, "running"))
    .values(
        progress=case((bindparam("b_moved", type_=Boolean), bindparam("b_progress")), else_=Task.progress),
        checkpoint=case((bindparam("b_moved", type_=Boolean), bindparam("b_checkpoint", type_=Task.checkpoint.type)),
                        else_=Task.checkpoint),
        output_chars=case((bindparam("b_wrote", type_=Boolean), bindparam("b_chars", type_=BigInteger)),
                          else_=Task.output_chars),
    )
    .execution_options(synchronize_session=False)
)
_NEW_LOGS = case((bindparam("b_whole", type_=Boolean), bindparam("b_text", type_=Text)),
                 else_=text_tail(func.coalesce(TaskAttempt.logs, "") + bindparam("b_text", type_=Text), LOG_TAIL_CHARS))
_BEAT_LOGS = (
    update(TaskAttempt)
    .where((TaskAttempt.task_id == bindparam("b_id")) & (TaskAttempt.attempt == bindparam("b_attempt"))
           & status_is(TaskAttempt.outcome, "running"))
    .values(logs=_NEW_LOGS, logs_cut=bindparam("b_total", type_=BigInteger) - func.length(_NEW_LOGS))
    .execution_options(synchronize_session=False)
)




__all__ = ["MAX_LOST", "Beat", "End", "Holder", "Key", "Lease", "Leases", "LiveSupervisor"]
