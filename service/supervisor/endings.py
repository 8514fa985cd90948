"""How an attempt ends: every cause becomes one :class:`End`, and one writer stores them all.

This module decides what each piece of news about an attempt means; the loop
(:mod:`service.supervisor.loop`) only schedules, and the storage verb
(:func:`service.storage.endings.end_attempts`) only writes. To change what happens when an
attempt ends, change this module and that verb.

=====================================================  ==========  =======  ============  ========
cause                                                  outcome     charged  counted lost  isolates
=====================================================  ==========  =======  ============  ========
run() or check_output() returned the output            succeeded   –        –             –
it raised (check_output(): 3 times in a row, or        failed      yes      –             –
permanently); retried after a backoff unless
permanent or out of attempts
its process died with it alone inside, a process that  crashed     yes      –             yes
ran nobody before it (retried like a failure)
it ran past its timeout (not retried)                  timed_out   yes      –             –
its process died while shared, or after an earlier     lost        no       yes           yes
occupant (nobody can tell whose fault it was)
the zygote died, and every task process with it        lost        no       yes           no
no task process started for it in time                 lost        no       yes           no
its process was stopped for another task's sake        lost        no       no            no
(a neighbour's timeout, cancel or lost lease)
a graceful stop handed it back                         released    no       no            no
it was cancelled, or reclaimed by another supervisor   (written by whoever did it; its code is stopped)
=====================================================  ==========  =======  ============  ========

**The writer** (:class:`EndWriter`). Ends that arrive within :data:`GROUP_COMMIT_S` of the first
(or :data:`MAX_BATCH` of them) are written in one transaction. Until it commits, an ended
attempt keeps its slot and its lease: nothing is logged, freed or shown as done, so a crash
before the commit loses no acknowledged end. When the database is away, the batch waits and is
tried again after :data:`RETRY_S`. When it *refuses* a value (:class:`StorageRefused`), the batch is
written one end at a time, and an end refused alone is written again without what was refused
(:func:`without_values`): one bad value fails at most its own attempt, never a batch.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from service.config import Settings
from service.errors import Conflict, StorageRefused, TenureError, describe
from service.storage.endings import End
from service.storage.leases import Leases
from service.storage.models import Outcome
from service.supervisor.attempt import MAX_CHECK_ERRORS, Execution, Failure
from service.supervisor.processes import Blame, Event
from service.supervisor.retry import RetryPolicy
from service.text import storable

if TYPE_CHECKING:
    from service.supervisor.metrics import SupervisorMetrics

log = logging.getLogger("tenure.supervisor")

GROUP_COMMIT_S = 0.002  # how long the first end of a batch waits for others to join it
MAX_BATCH = 500  # ends written in one transaction at most
RETRY_S = 0.5  # a batch the database could not take is tried again this often


class Next(enum.Enum):
    """What a polling attempt does next, when the news did not end it."""

    CHECK = "check"  # ask check_output() now
    WAIT = "wait"  # wait for the next check


class Endings:
    """Turns what happened to an attempt into its :class:`End` (see the module's table)."""

    def __init__(self, settings: Settings, retry: RetryPolicy) -> None:
        self.settings, self.retry = settings, retry

    def after(self, ex: Execution, event: Event) -> End | Next:
        """What news from a task process means: the attempt's end, or what it does next."""
        if event.kind == "died":
            return self.died(ex, event.reason, event.blame)
        failure = event.failure
        if event.kind == "ran":
            if failure is not None:
                return self.failed(ex, failure)
            return Next.CHECK if event.polling else self.succeeded(ex, event.value)
        # checked
        if failure is None:
            if event.value is not None:
                return self.succeeded(ex, event.value)
            ex.check_errors = 0
            return Next.WAIT
        ex.check_errors += 1
        if failure.permanent or ex.check_errors >= MAX_CHECK_ERRORS:
            return self.failed(ex, failure)
        log.warning("attempt.check_error task=%s attempt=%s error=%r (will check again)", ex.key[0], ex.key[1],
                    failure.message)
        return Next.WAIT

    # -- each cause ---------------------------------------------------------------------

    def succeeded(self, ex: Execution, value: Any) -> End:
        return _end(ex, Outcome.SUCCEEDED, result=value)

    def failed(self, ex: Execution, failure: Failure) -> End:
        """It raised: charged, and retried after a backoff unless permanent or out of attempts."""
        return self._charged(ex, Outcome.FAILED, failure)

    def died(self, ex: Execution, reason: str, blame: Blame) -> End:
        """Its task process died (see :class:`Blame`)."""
        if blame is Blame.OWN:  # its next attempt runs alone too: a crash again is its own again
            return replace(self._charged(ex, Outcome.CRASHED, Failure(f"crashed: {reason}")), isolate=True)
        return self.lost(ex, reason, counted=blame is not Blame.STOPPED, isolate=blame is Blame.UNCLEAR)

    def overdue(self, ex: Execution) -> End:
        """Its deadline passed: it ran past its timeout, or no task process started for it in time."""
        if ex.overdue_because == "no_process":
            return self.lost(ex, f"no task process started for it within {ex.limit_s:g} s (its code never ran)",
                             counted=True, isolate=False)
        failure = Failure(f"TimeoutError: the task ran past its timeout of {ex.limit_s:g} s; its process was "
                          "stopped", permanent=True)
        return self._charged(ex, Outcome.TIMED_OUT, failure)

    def unsendable(self, ex: Execution, exc: Exception) -> End:
        """Its args or checkpoint cannot be sent to a task process (too large, not JSON): it fails for good."""
        failure = Failure(f"its args or checkpoint cannot be sent to a task process: {describe(exc)}", permanent=True)
        return self.failed(ex, failure)

    def lost(self, ex: Execution, reason: str, *, counted: bool, isolate: bool) -> End:
        """Interrupted through no proven fault of its own: not charged; ``counted`` toward the loss cap."""
        return _end(ex, Outcome.LOST, error=reason, counted=counted, isolate=isolate)

    def released(self, ex: Execution) -> End:
        """Handed back at a graceful stop, with its progress and checkpoint: not charged."""
        return _end(ex, Outcome.RELEASED, error="released: its supervisor stopped gracefully")

    def _charged(self, ex: Execution, outcome: Outcome, failure: Failure) -> End:
        decision = self.retry.decide(failure.permanent, ex.lease.charged + 1, ex.lease.max_attempts)
        return _end(ex, outcome, error=failure.message, traceback=failure.traceback,
                    retry_in_s=decision.delay_s if decision.retry else None)


def _end(ex: Execution, outcome: Outcome, **fields: Any) -> End:
    """The end of ``ex`` with its latest progress, checkpoint and output."""
    lease = ex.lease
    version, reported, saved = ex.snapshot()
    logs, cut = ex.logs()
    progress: float | None = reported
    if not version:  # it reported nothing: what the task row holds (an earlier attempt's progress) stays
        progress, saved = None, None
    kept = {"progress": progress, "checkpoint": saved, "logs": logs or None, "logs_cut": cut, **fields}
    if outcome is Outcome.SUCCEEDED:
        kept.pop("checkpoint")
    return End(task_id=lease.task_id, attempt=lease.attempt, run_id=lease.run_id, outcome=outcome,
               lost_before=lease.lost, limited=lease.limited, **kept)


def without_values(end: End, why: str) -> End:
    """The end written again after the database refused it alone: its text forced to ASCII, its
    result, checkpoint and output left out. A success whose result was refused fails for good."""
    def ascii_only(text: str | None) -> str | None:
        return None if text is None else text.encode("ascii", "backslashreplace").decode()

    reason = ascii_only(storable(why)) or "the database refused a value"
    if end.outcome is Outcome.SUCCEEDED:
        return replace(end, outcome=Outcome.FAILED, result=None, retry_in_s=None, checkpoint=None, logs=None,
                       logs_cut=None, traceback=None, error=f"its output could not be stored: {reason}")
    return replace(end, error=ascii_only(end.error), traceback=None, logs=None, logs_cut=None, checkpoint=None,
                   result=None)


@dataclass(frozen=True)
class Written:
    ex: Execution
    end: End
    applied: bool  # False: its lease was lost meanwhile (cancelled, reclaimed), and nothing was written


class EndWriter:
    """Ends waiting to be written, oldest first (see the module: group commits, retries, refusals)."""

    def __init__(self, leases: Leases, metrics: SupervisorMetrics, monotonic: Callable[[], float]) -> None:
        self.leases, self.metrics, self.monotonic = leases, metrics, monotonic
        self.waiting: deque[Execution] = deque()

    def __len__(self) -> int:
        return len(self.waiting)

    def add(self, ex: Execution) -> None:
        """Queue ``ex``, whose end is recorded."""
        assert ex.end is not None
        self.waiting.append(ex)

    def due(self, now: float, others_running: bool) -> bool:
        """Whether to write now: the oldest end waited long enough, the batch is full, or nothing
        else runs that could join it."""
        if not self.waiting or now < self.waiting[0].write_at:
            return False
        return not others_running or len(self.waiting) >= MAX_BATCH or now >= self.deadline

    @property
    def deadline(self) -> float:
        return self.waiting[0].write_at + GROUP_COMMIT_S if self.waiting else float("inf")

    def write(self, holder: int, now: float) -> tuple[list[Written], TenureError | None]:
        """Write up to :data:`MAX_BATCH` waiting ends in one transaction: (what became of each end
        written, and the error when the database went away before all were).

        Each end written is acknowledged then, and only then: logged (``attempt.<outcome>``) and
        counted in the metrics. Those the database could not take (it is away, not refusing) wait
        :data:`RETRY_S`, each queued once, in their order; the ones written before it went away
        (one by one, after a refusal) are in the list all the same.
        """
        batch = [self.waiting.popleft() for _ in range(min(MAX_BATCH, len(self.waiting)))]
        written, error = self._write(holder, batch, now)
        for w in written:
            if w.applied:
                end = w.end
                log.info("attempt.%s task=%s attempt=%s supervisor=%s%s", end.outcome.value, end.task_id,
                         end.attempt, holder, f" error={end.error!r}" if end.error else "")
                self.metrics.ended(w.ex.lease.kind, end.outcome, self.monotonic() - w.ex.started_mono)
        return written, error

    def _write(self, holder: int, batch: list[Execution], now: float) -> tuple[list[Written], TenureError | None]:
        try:
            applied = self.leases.end_attempts(holder, [_recorded(ex) for ex in batch])
        except (StorageRefused, Conflict) as exc:
            log.warning("attempt.batch_refused attempts=%s error=%s: writing them one by one", len(batch), exc)
            return self._one_by_one(holder, batch, now)
        except TenureError as exc:
            return [], self._again(batch, now, exc)
        return [Written(ex, _recorded(ex), ex.key in applied) for ex in batch], None

    def _one_by_one(self, holder: int, batch: list[Execution], now: float) -> tuple[list[Written], TenureError | None]:
        written: list[Written] = []
        for index, ex in enumerate(batch):
            try:
                written.append(self._alone(holder, ex))
            except TenureError as exc:  # away now: the rest wait, each once
                return written, self._again(batch[index:], now, exc)
        return written, None

    def _alone(self, holder: int, ex: Execution) -> Written:
        """Write one end; refused, again without what was refused; refused still, as bare as it gets."""
        end = _recorded(ex)
        for tried in range(3):
            try:
                applied = self.leases.end_attempts(holder, [end])
            except (StorageRefused, Conflict) as exc:
                log.error("attempt.end_refused task=%s attempt=%s error=%s", ex.key[0], ex.key[1], exc)
                end = without_values(end, str(exc)) if tried == 0 else bare(end)
                continue
            ex.end = end
            return Written(ex, end, ex.key in applied)
        log.error("attempt.end_dropped task=%s attempt=%s: the database refused even a bare end; its lease is "
                  "handed back by the next heartbeat", ex.key[0], ex.key[1])
        return Written(ex, end, False)

    def _again(self, batch: list[Execution], now: float, exc: TenureError) -> TenureError:
        """Put ``batch`` back at the head of the queue, to be tried after :data:`RETRY_S`; ``exc``."""
        log.info("attempt.ends_deferred attempts=%s error=%s (trying again in %g s)", len(batch), exc, RETRY_S)
        for ex in reversed(batch):
            ex.write_at = now + RETRY_S
            self.waiting.appendleft(ex)
        return exc


def _recorded(ex: Execution) -> End:
    assert ex.end is not None, f"attempt {ex.key} has no end recorded"
    return ex.end


def bare(end: End) -> End:
    """An end with nothing of the task's in it: what is written when the database refuses the rest."""
    outcome = Outcome.FAILED if end.outcome is Outcome.SUCCEEDED else end.outcome
    return End(task_id=end.task_id, attempt=end.attempt, run_id=end.run_id, outcome=outcome,
               error="the database refused the values of this attempt's end (see the supervisor's log)",
               retry_in_s=None if end.outcome is Outcome.SUCCEEDED else end.retry_in_s, isolate=end.isolate,
               counted=end.counted, lost_before=end.lost_before, limited=end.limited)
