"""What a person wants to know about a run: how far, how long left, and how it ended.

Pure functions over a run snapshot (:meth:`Store.run_snapshot`) and its attempt outcomes
(:meth:`Store.run_attempt_outcomes`); the CLI's ``watch`` and the web page both use them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from service.storage.models import RunStatus
from service.storage.views import MAX_AHEAD, RunView, TaskView

_AT_PERCENT = re.compile(r"\s*\(at \d+%\)")
# A run's status as people read it, where the stored word would not do ("Run 7 deleting").
_RUN_STATUS_WORDS = {RunStatus.DELETING.value: "being deleted"}


def run_status_words(status: str) -> str:
    """A run's status in the words a page or the terminal shows: "being deleted" for ``deleting``."""
    return _RUN_STATUS_WORDS.get(status, status)


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    fraction: float  # finished tasks plus the progress of running ones, over the total
    elapsed_s: float
    eta_s: float | None  # None while nothing can be estimated, or once the run is over


@dataclass(frozen=True)
class Summary:
    succeeded: int
    failed: int
    cancelled: int
    failures: list[tuple[str, int]]  # (reason, how many tasks), commonest first
    retries: int  # charged attempts (failed, timed out, crashed) that were tried again
    recovered: int  # attempts lost through no fault of their task (a crash of a server), never charged
    released: int  # attempts handed back at a graceful stop, never charged
    crashed: int  # attempts whose own process died (charged)
    duration_s: float | None  # run created → finished
    slowest: list[tuple[int, float]]  # (task number from 1, seconds from first start to finish), slowest first


def progress(run: RunView, tasks: list[TaskView], now: datetime) -> Progress:
    return progress_of(run, [(t.progress, t.started_at) for t in tasks if t.status == "running"], now)


def progress_of(run: RunView, running: list[tuple[float, datetime | None]], now: datetime) -> Progress:
    """As :func:`progress`, from the (progress, started_at) of every running task alone. Time is
    counted from the run's start (:func:`began`): a run made to start later has not been slow while it waited."""
    done = run.done
    partial = sum(p for p, _ in running)
    fraction = (done + partial) / run.total if run.total else 1.0
    end = run.finished_at or now
    elapsed = max(0.0, (end - began(run)).total_seconds())
    return Progress(done, run.total, min(1.0, fraction), elapsed, _eta(run, running, fraction, elapsed, now))


def _eta(run: RunView, running: list[tuple[float, datetime | None]], fraction: float, elapsed: float,
         now: datetime) -> float | None:
    if not run.live or fraction <= 0.0:
        return None
    waiting = run.counts.get("queued", 0) + run.counts.get("retrying", 0)
    if not waiting and running:
        # Everything left is running: the run ends when its slowest running task does.
        remaining = []
        for done, started_at in running:
            if done <= 0.02 or started_at is None:
                return None
            spent = (now - started_at).total_seconds()
            remaining.append(spent * (1.0 - done) / done)
        return max(remaining)
    return elapsed * (1.0 - fraction) / fraction


def began(run: RunView) -> datetime:
    """When a run's time starts: its scheduled start if it was made to start later, else its
    creation (also when it ended before that start: cancelled, or started early)."""
    at = run.scheduled_for
    if at is None or at <= run.created_at or (run.finished_at is not None and run.finished_at < at):
        return run.created_at
    return at


def not_yet(run: RunView, now: datetime) -> str | None:
    """"scheduled for 14:05 UTC (in 3 min)" while a live run waits for its start and nothing of it
    has run (a cancelled or retried one says nothing of the kind); None otherwise."""
    if not run.live or run.scheduled_for is None or run.scheduled_for <= now:
        return None
    if run.done or run.counts.get("running", 0):
        return None
    return scheduled_for(run.scheduled_for, now)


def scheduled_for(at: datetime, now: datetime) -> str:
    """"scheduled for 14:05 UTC (in 3 min)"; the date too when ``at`` is on another day (both naive UTC)."""
    return f"scheduled for {clock_time(at, now, 'UTC')} ({starts_in(at, now)})"


def clock_time(at: datetime, now: datetime, zone: str) -> str:
    """``14:05``, ``14:05:30`` with seconds when it has any, prefixed by the date when it is not
    ``now``'s day, then the zone's name: both times in the same zone."""
    text = at.strftime("%H:%M:%S" if at.second else "%H:%M")
    if at.date() != now.date():
        text = f"{at:%Y-%m-%d} {text}"
    return f"{text} {zone}"


def starts_in(at: datetime, now: datetime, past: str = "due {} ago") -> str:
    """How far ahead ``at`` is, as coarse as a person says it: "in 40 s", "in 3 min", "in 5 h",
    "in 12 days"; "now" within half a second; once it has passed, ``past`` ("due 12 s ago": nothing
    took it yet; "{} ago" for something that happened)."""
    left = (at - now).total_seconds()
    if abs(left) < 0.5:
        return "now"
    words = "in {}" if left > 0 else past
    for unit_s, unit, up_to in ((1, "s", 100), (60, "min", 100), (3600, "h", 48)):
        if round(abs(left) / unit_s) < up_to:
            return words.format(f"{round(abs(left) / unit_s)} {unit}")
    return words.format(f"{round(abs(left) / 86400)} days")


def waiting(ahead: int | None, workers: int | None = None, held: str | None = None) -> str | None:
    """What a live run that runs nothing waits for (see RunStatusView.ahead and .held), or None."""
    if held is not None and "paused" in held:
        return f"paused: {held}"
    if held is not None:
        return f"waiting for a free slot: {held}"
    if ahead is None:
        return None
    if workers == 0:
        return "waiting for a worker: none is running (start one with tenure worker, or tenure serve)"
    if not ahead:
        return "waiting for a free slot: next in line"
    many = f"{MAX_AHEAD:,} or more tasks" if ahead >= MAX_AHEAD else counted(ahead, "task")
    return f"waiting for a free slot: {many} ahead"


def reason(error: str | None) -> str:
    """An error message with its per-task details removed, so alike failures group together."""
    if not error:
        return "unknown error"
    return _AT_PERCENT.sub("", error.splitlines()[0]).strip()[:200]


def summarize(run: RunView, tasks: list[TaskView], outcomes: dict[str, int]) -> Summary:
    durations = [
        (t.position + 1, (t.finished_at - t.started_at).total_seconds())
        for t in tasks
        if t.status == "succeeded" and t.started_at and t.finished_at
    ]
    durations.sort(key=lambda pair: -pair[1])
    errors = Counter(t.error for t in tasks if t.status == "failed")
    return summarize_grouped(run, list(errors.items()), durations[:3], outcomes)


def summarize_grouped(run: RunView, errors: list[tuple[str | None, int]], slowest: list[tuple[int, float]],
                      outcomes: dict[str, int]) -> Summary:
    """As :func:`summarize`, from the failed tasks' errors already counted (``GROUP BY error``) and
    the slowest successes already found: what a big run's page reads instead of every task."""
    failures: Counter[str] = Counter()
    for error, n in errors:
        failures[reason(error)] += n
    duration = (run.finished_at - began(run)).total_seconds() if run.finished_at else None
    return Summary(
        succeeded=run.counts.get("succeeded", 0),
        failed=run.counts.get("failed", 0),
        cancelled=run.counts.get("cancelled", 0),
        failures=failures.most_common(),
        retries=outcomes.get("retried", 0),
        recovered=outcomes.get("lost", 0),
        released=outcomes.get("released", 0),
        crashed=outcomes.get("crashed", 0),
        duration_s=duration,
        slowest=sorted(slowest, key=lambda pair: -pair[1])[:3],
    )


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 retry``, ``2 retries``, ``0 tasks``: a count with its noun in the right number.

    Without ``plural``, English's regular rules: ``retry`` → ``retries``, ``batch`` → ``batches``,
    else an ``s``; pass ``plural`` for any other.
    """
    if n == 1:
        return f"{n} {noun}"
    if plural is None:
        if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
            plural = noun[:-1] + "ies"
        elif noun.endswith(("s", "x", "ch", "sh")):
            plural = noun + "es"
        else:
            plural = noun + "s"
    return f"{n} {plural}"


def format_seconds(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s``, ``42s``, ``0.4s``; an em dash for None."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
