"""Real `tenure worker` processes for the schedule guarantees, and reading a schedule's fire rows.

A :class:`Fleet` keeps one worker per simulated host (``TENURE_HOST``), each with its own log,
that a test kills (``kill -9``), restarts, freezes (SIGSTOP) and thaws (SIGCONT); a host may
run under libfaketime with a clock that the test steps while it runs (the offset is read from a
file). :func:`coverage` turns fire rows into the slots they stand for, refusing any slot that
two rows claim.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

import service
from service.cron import Cron
from service.storage.db import db_now
from service.storage.models import Schedule
from tests.acceptance.procs import REPO, stop_all
from tests.conftest import wait_for

# schedule.fired schedule='every-second' slot=2026-12-03T12:00:01Z catch_up=False slots=1 ...
LOGGED = re.compile(r"schedule\.(\w+) schedule='([^']*)' slot=(\S+) catch_up=(\w+) slots=(\d+)")


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found, "Debian's faketime package puts libfaketime.so.1 under /usr/lib/<arch>/faketime/"
    return found[0]


class Fleet:
    """`tenure worker` processes on one database, one per simulated host."""

    def __init__(self, url: str, logs: Path, env: dict[str, str], *extra: str) -> None:
        self.url, self.logs, self.env, self.extra = url, logs, env, extra
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.clock_files: dict[str, Path] = {}
        self.frozen: set[str] = set()
        self.kills = 0
        self.starts = 0
        self.log_from: dict[str, int] = {}  # where each host's latest start begins in its log

    def log(self, host: str) -> Path:
        return self.logs / f"{host}.log"

    def start(self, host: str, clock_file: Path | None = None) -> None:
        """Start the host's worker; with ``clock_file`` (kept for its restarts) its wall clock is
        offset by what that file says ("+4s", "-4s"), re-read at every reading of the clock."""
        if clock_file is not None:
            self.clock_files[host] = clock_file
        env = {**os.environ, "TENURE_HOST": host, **self.env}
        if host in self.clock_files:
            # Only the wall clock: faking CLOCK_MONOTONIC too breaks every timed wait in the process.
            # FAKETIME_NO_CACHE: with Debian's libfaketime 0.9.10 a cached offset (FAKETIME_CACHE_DURATION)
            # sometimes never picked up a change of the file; re-reading it at every call always did.
            env.update({"LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(self.clock_files[host]),
                        "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
            env.pop("FAKETIME", None)  # it would win over the file
        with open(self.log(host), "ab") as out:
            self.log_from[host] = out.tell()
            self.procs[host] = subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", self.url,
                                                 *self.extra], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                                env=env)
        self.starts += 1

    def kill9(self, host: str) -> None:
        proc = self.procs[host]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.frozen.discard(host)
        self.kills += 1

    def freeze(self, host: str) -> None:
        self.procs[host].send_signal(signal.SIGSTOP)
        self.frozen.add(host)

    def thaw(self, host: str) -> None:
        self.procs[host].send_signal(signal.SIGCONT)
        self.frozen.discard(host)

    def alive(self) -> list[str]:
        return [h for h, p in self.procs.items() if p.poll() is None]

    def exited(self) -> dict[str, int]:
        """Hosts whose worker ended on its own (not killed by the test): they crashed."""
        return {h: code for h, p in self.procs.items() if (code := p.poll()) is not None and code != -signal.SIGKILL}

    def started(self, host: str) -> bool:
        """Its latest start got as far as running its supervisor (its stop signals handled by then)."""
        with open(self.log(host), "rb") as log:
            log.seek(self.log_from.get(host, 0))
            return b"supervisor.started" in log.read()

    def stop(self) -> dict[str, int | None]:
        """SIGCONT the frozen, then SIGTERM everyone and wait (SIGKILL any that hangs); each host's exit code
        (-9: the test killed it last). A worker restarted a moment ago is let finish starting first: a
        SIGTERM while the interpreter is still importing ends any Python program before its handler exists."""
        for host in list(self.frozen):
            self.thaw(host)
        wait_for(lambda: all(self.started(h) for h in self.alive()), 30, "every worker running its supervisor")
        return dict(zip(self.procs, stop_all(list(self.procs.values()), 30), strict=True))

    def tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                         for p in sorted(self.logs.glob("*.log")))

    def logged(self, schedule: str) -> list[tuple[str, str, datetime]]:
        """(host, outcome, slot) of every slot a worker logged handling, across its restarts."""
        found = []
        for path in sorted(self.logs.glob("*.log")):
            for m in LOGGED.finditer(path.read_text(errors="replace")):
                if m.group(2) == schedule and m.group(3) != "None":
                    found.append((path.stem, m.group(1), datetime.fromisoformat(m.group(3).rstrip("Z"))))
        return found


def db_time(t: service.Tenure) -> datetime:
    """The database's clock (PostgreSQL's; on SQLite this process's, on the same host as the workers')."""
    with t.engine.connect() as conn:
        return conn.execute(select(db_now())).scalar_one()  # type: ignore[no-any-return]


def fires(t: service.Tenure, name: str) -> list[Any]:
    """The schedule's fire rows by slot, with the run's times when the fire created a run."""
    with t.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT f.id, f.slot_at, f.slots, f.last_slot_at, f.outcome, f.catch_up, f.reason, f.fired_at, "
            "f.run_id, f.task_id, r.created_at AS run_created, r.finished_at AS run_finished, r.status AS run_status "
            "FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id LEFT JOIN runs r ON r.id = f.run_id "
            "WHERE s.name = :name ORDER BY f.slot_at, f.id"), {"name": name}).all())


def labelled_tasks(t: service.Tenure, label: str) -> list[int]:
    """Ids of every task labelled so (each schedule's task carries its schedule's name as label)."""
    with t.engine.connect() as conn:
        return [int(r[0]) for r in conn.execute(text("SELECT id FROM tasks WHERE label = :l ORDER BY id"),
                                                {"l": label})]


def cursor(t: service.Tenure, name: str) -> datetime | None:
    with t.engine.connect() as conn:
        return conn.execute(select(Schedule.next_slot_at).where(Schedule.name == name)).scalar_one()  # type: ignore[no-any-return]


def move_cursor(t: service.Tenure, name: str, to: datetime) -> None:
    with t.engine.begin() as conn:
        conn.execute(Schedule.__table__.update().where(Schedule.name == name).values(next_slot_at=to))


@dataclass(frozen=True)
class Coverage:
    by_slot: dict[datetime, Any]  # each slot -> the one row that stands for it
    doubled: list[tuple[datetime, int, int]]  # (slot, row id, row id) where two rows claim a slot
    bad_spans: list[Any]  # rows whose slots count is not the slots their span holds


def coverage(rows: list[Any], c: Cron) -> Coverage:
    """Which row stands for each slot: one slot per row, or every slot of a missed span."""
    by_slot: dict[datetime, Any] = {}
    doubled: list[tuple[datetime, int, int]] = []
    bad: list[Any] = []
    for row in rows:
        if row.slot_at is None:
            continue  # fired by hand: no slot
        slot = dt(row.slot_at)
        if row.slots > 1 or row.last_slot_at is not None:
            slots, more = c.between(slot, dt(row.last_slot_at or row.slot_at), 100_000)
            if more or len(slots) != row.slots:
                bad.append(row)
        else:
            slots = [slot]
        for s in slots:
            if s in by_slot:
                doubled.append((s, by_slot[s].id, row.id))
            else:
                by_slot[s] = row
    return Coverage(by_slot, doubled, bad)


def every_slot(c: Cron, first: datetime, last: datetime) -> list[datetime]:
    slots, more = c.between(first, last, 1_000_000)
    assert not more
    return slots


def dt(value: Any) -> datetime:
    """A stored time as a naive datetime (SQLite hands some back as text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
