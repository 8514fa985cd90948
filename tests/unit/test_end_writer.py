"""The writer of ends when the database refuses a batch and then goes away half-way through writing
it one end at a time: each end is acknowledged once, and queued again at most once.

The storage here is a stand-in scripted call by call (refuse, ok, away): that order of a refusal and
an outage cannot be provoked on purpose from a real database. It keeps the real verb's fence (an
end already written is not written again). A review found the batch queued twice this way: ends
written before the outage lost their acknowledgement, the rest were acknowledged twice.
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
    written, error = writer.write(holder=7, now=0.0)
    assert isinstance(error, StorageError) and [w.ex.key for w in written if w.applied] == [(1, 1)]
    assert (1, 1) in leases.written  # task 1's end is committed, and was acknowledged
    waiting = [ex.key for ex in writer.waiting]
    # The database is back: everything waiting is written.
    acknowledged = [w.ex.key for w in written if w.applied]
    while len(writer):
        more, error = writer.write(holder=7, now=1.0)
        assert error is None
        acknowledged += [w.ex.key for w in more if w.applied]
    # Each end is acknowledged exactly once (logged, counted), and only the two not yet written wait.
    assert (waiting, sorted(acknowledged), len(metrics.ended_calls)) == ([(2, 1), (3, 1)], [(1, 1), (2, 1), (3, 1)], 3)
