"""The storage layer: every SQL statement tenure runs lives in this package, and nowhere else.

Modules: :mod:`db` (engines, transactions, the clock, what differs between SQLite and
PostgreSQL), :mod:`models` (the tables), :mod:`schema` (migrations), :mod:`runs` (submitting,
cancelling, retrying, completing runs), :mod:`reads` (what pages, the API and the CLI show),
:mod:`submit` (runs and tasks, idempotently), :mod:`retention` (pruning), :mod:`schedules` and
:mod:`firing` (schedules, one fire row per slot), :mod:`flow` and :mod:`claims` (queues,
priorities, pauses and limits), :mod:`leases` (the supervisor's verbs), :mod:`notify` (LISTEN/NOTIFY), :mod:`errors`
(database errors as tenure's own). Callers call verbs; they never build queries.

Rules every verb keeps:

* **One transaction per verb.** Writes begin ``IMMEDIATE`` on SQLite (one writer at a time);
  reads are one snapshot (REPEATABLE READ on PostgreSQL).
* **One lock order.** A write that touches several rows locks them in this order: *queues*
  rows (by name), then the *run* row, then its *tasks* in id order, then their *attempts*,
  then *limit_keys* rows (by name), then *supervisors* rows. Claims lock tasks with ``SKIP
  LOCKED``, so they never wait for one; a claim that holds a key row takes any further key
  row with ``SKIP LOCKED`` too (see :mod:`claims`). With every transaction taking locks in
  one order, two of them cannot deadlock.
* **Guarded updates.** A run's status changes only from the status the verb read under lock
  (``WHERE status = 'running'``); a leased task's row changes only under its fence
  (id, supervisor_id, attempt, status = 'running'). Zero rows changed means someone else
  moved first, and nothing is written.
* **One clock.** Every timestamp stored is the database's clock (:class:`db.db_now`), and
  due times are compared with it, so no two processes' clocks are ever compared. Liveness
  is judged without wall clocks at all (see :mod:`service.supervisor.liveness`).
* **Indexes as sent.** Statuses in hot statements are SQL literals (:func:`db.status_is`),
  so the planner can use the partial indexes; a test checks the plans of the statements
  actually emitted, on both backends.
"""

from __future__ import annotations

from sqlalchemy import Engine

from service.storage.flow import Flow
from service.storage.reads import Reads
from service.storage.retention import Retention
from service.storage.runs import Runs
from service.storage.schedules import Schedules
from service.storage.submit import Submissions


class Store(Submissions, Runs, Reads, Retention, Schedules, Flow):
    """Submissions, run-level writes, reads, retention, schedules and flow control over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
