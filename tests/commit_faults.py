"""A worker plugin for tests: the worker kills itself with SIGKILL around one group commit of ends.

Imported by ``tenure worker`` through ``TENURE_IMPORT=tests.commit_faults`` (it registers no
kind, so the zygote never imports it). It does nothing unless ``TENURE_TEST_CRASH_AT`` is set:

* ``TENURE_TEST_CRASH_AT``: ``before`` (the batch's statements ran and hold their row locks; its
  COMMIT is about to be sent) or ``after`` (the batch's transaction committed; the worker has not
  yet logged ``attempt.succeeded``, freed the slots or let the processes go);
* ``TENURE_TEST_CRASH_BATCH``: which batch of ends holding successes, counted from 1;
* ``TENURE_TEST_CRASH_NOTE``: a file where the (task, attempt) pairs of that batch's successes
  are written, as JSON, before the kill.

It wraps the storage verb as :class:`service.storage.leases.Leases` calls it (to count batches and
arm, inside the batch's transaction), SQLAlchemy's ``commit`` event (``before``: fired right before
the COMMIT), and ``Leases.end_attempts`` (``after``: it returns right after its one commit).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, event

from service.storage import leases as leases_module
from service.storage.endings import End
from service.storage.models import Outcome

MOMENT = os.environ.get("TENURE_TEST_CRASH_AT", "")
BATCH = int(os.environ.get("TENURE_TEST_CRASH_BATCH", "1"))
NOTE = os.environ.get("TENURE_TEST_CRASH_NOTE", "")

_armed = threading.local()  # set in the thread whose transaction writes the chosen batch
_seen = 0  # batches holding successes, so far (the loop's thread writes them, one at a time)


def _die(why: str) -> None:
    sys.stderr.write(f"commit_faults.kill moment={MOMENT} batch={BATCH}: {why}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _counting(verb: Any) -> Any:
    def end_attempts(conn: Connection, holder: int, ends: Sequence[End]) -> Any:
        global _seen
        applied = verb(conn, holder, ends)
        wins = sorted(e.key for e in ends if e.outcome is Outcome.SUCCEEDED)
        if wins:
            _seen += 1
            if _seen == BATCH:
                if NOTE:
                    with open(NOTE, "w") as f:
                        json.dump({"successes": wins, "applied": sorted(applied)}, f)
                _armed.moment = MOMENT
        return applied

    return end_attempts


def _before_commit(_conn: Connection) -> None:
    if getattr(_armed, "moment", None) == "before":
        _die("the batch's statements ran; its COMMIT was not sent")


def _acknowledging(method: Any) -> Any:
    def end_attempts(self: Any, holder: int, ends: Sequence[End]) -> Any:
        applied = method(self, holder, ends)
        if getattr(_armed, "moment", None) == "after":
            _die("the batch committed; the worker has not acknowledged it")
        return applied

    return end_attempts


if MOMENT:
    if MOMENT not in ("before", "after"):
        raise ValueError(f"TENURE_TEST_CRASH_AT must be 'before' or 'after', not {MOMENT!r}")
    leases_module.end_attempts = _counting(leases_module.end_attempts)  # type: ignore[assignment]
    leases_module.Leases.end_attempts = _acknowledging(leases_module.Leases.end_attempts)  # type: ignore[method-assign]
    event.listen(Engine, "commit", _before_commit)
