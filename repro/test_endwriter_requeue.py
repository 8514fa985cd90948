"""EndWriter: a database outage in the middle of the one-by-one fallback re-queues the batch twice.

`EndWriter._write` catches the TenureError that `_one_by_one` raises *after* `_one_by_one` has
already put `batch[index:]` back; the outer handler then puts the whole `batch` back again. So:

* ends already committed one by one (before the outage) are queued again: their acknowledgement
  (log line, metric) is lost, and their rewrite is logged as "lease lost, write dropped";
* the ends after the outage are queued twice, and acknowledged (logged, counted) twice once the
  database is back.
"""

from __future__ import annotations

from typing import Any

from service.errors import StorageError, StorageRefused
from service.storage.endings import End
from service.storage.leases import Lease
from service.storage.models import Outcome
from service.supervisor.attempt import Execution
from service.supervisor.endings import EndWriter


class FakeLeases:
    """end_attempts as the storage verb behaves: fenced (a written attempt is not written again)."""

    def __init__(self, script: list[str]) -> None:
        self.script = script  # per call: "refuse", "away" or "ok"
        self.written: set[tuple[int, int]] = set()
        self.calls: list[list[tuple[int, int]]] = []

    def end_attempts(self, holder: int, ends: list[End]) -> set[tuple[int, int]]:
        self.calls.append([e.key for e in ends])
        step = self.script.pop(0) if self.script else "ok"
        if step == "refuse":
            raise StorageRefused("the database refused a value: bad")
        if step == "away":
            raise StorageError("the database is away")
        applied = {e.key for e in ends if e.key not in self.written}
        self.written |= applied
        return applied


class FakeMetrics:
    def __init__(self) -> None:
        self.ended_calls: list[tuple[str, str]] = []

    def ended(self, kind: str, outcome: Any, ran_s: float) -> None:
        self.ended_calls.append((kind, str(outcome)))


def _ex(task_id: int) -> Execution:
    lease = Lease(task_id=task_id, attempt=1, charged=0, lost=0, max_attempts=3, run_id=None, position=0,
                  kind="echo", args={}, checkpoint=None, timeout_s=None)
    ex = Execution(lease=lease, started_mono=0.0, deadline_mono=100.0)
    ex.record(End(task_id=task_id, attempt=1, run_id=None, outcome=Outcome.SUCCEEDED, result=task_id), 0.0)
    return ex


def test_an_outage_during_the_one_by_one_fallback_queues_each_end_once() -> None:
    # The batch of 3 is refused (one bad value); alone, the first end is written; then the database goes away.
    leases = FakeLeases(["refuse", "ok", "away"])
    metrics = FakeMetrics()
    writer = EndWriter(leases, metrics, lambda: 0.0)  # type: ignore[arg-type]
    exs = [_ex(1), _ex(2), _ex(3)]
    for ex in exs:
        writer.add(ex)
    try:
        writer.write(holder=7, now=0.0)
    except StorageError:
        pass
    assert (1, 1) in leases.written  # task 1's end is committed
    waiting = [ex.key for ex in writer.waiting]
    print("waiting after the outage:", waiting)
    # The database is back: everything waiting is written.
    acknowledged = []
    while len(writer):
        acknowledged += [w.ex.key for w in writer.write(holder=7, now=1.0) if w.applied]
    print("acknowledged (logged and counted):", acknowledged)
    print("metrics.ended calls:", len(metrics.ended_calls))
    # Each end is acknowledged exactly once (logged, counted), and only the two not yet written wait.
    assert (waiting, sorted(acknowledged), len(metrics.ended_calls)) == ([(2, 1), (3, 1)], [(1, 1), (2, 1), (3, 1)], 3)
