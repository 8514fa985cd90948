"""Time: how late delayed tasks start and schedule slots fire, and what 1,000 schedules cost an idle worker.

    .venv/bin/python bench/time.py [--quick] [--idle-s S] [--tasks N] [--history N] [--backend sqlite|postgresql]

For SQLite (doorbells) and PostgreSQL (LISTEN/NOTIFY), each part on a fresh database, every
worker a real `tenure worker` process (default settings, WARNING logs) unless said otherwise:

1. **Start lag after idle.** One worker is up (it ran one `echo` task), then N (default 200)
   delayed `echo` tasks are submitted at once with ``start_at`` = the database's now + IDLE_S
   (default 60) + i * SPREAD_S / N (SPREAD_S 4: distinct due times 20 ms apart). The worker
   idles IDLE_S until the first comes due. Lag = ``task_attempts.started_at`` -
   ``tasks.scheduled_for`` (both stamped by the database's clock; SQLite's to the millisecond).
   **Earlier task while asleep**: with a task due in an hour (the worker sleeps toward it),
   tasks due in 0.2-0.8 s are submitted one at a time (a 0.2-0.5 s pause before each, each
   waited for): the same lag, for a due time that moves the worker's wake-up earlier.
2. **Idle CPU over a big history.** 1,000 schedules (UTC and whole-hour zones: daily and hourly
   ones at minutes that do not come up during the measurement, weekly ones, and 5 every
   minute) over HISTORY (default 1,000,000) finished tasks with their attempts (bench/idle.py's
   fill). Then one idle `tenure worker` for IDLE_S: its CPU and its task processes' (utime +
   stime from /proc) as a share of one core. Then the same with an embedded supervisor
   (``Tenure.start_supervisor`` in a child process, so that this process's CPU is not counted):
   its CPU and ``Supervisor.loop_turns`` (how often its loop woke) over IDLE_S.
3. **Fire lag of schedules.** Two workers, 5 schedules ``* * * * * *`` (every second) for
   FIRE_S (default 20): ``schedule_fires.fired_at - slot_at`` (p50, p99, max), and each slot's
   task start (``task_attempts.started_at - slot_at``); fires missing or doubled are counted.

Targets: start lag p99 <= 50 ms; idle CPU < 2 % of a core. ``--quick``: IDLE_S 10, HISTORY
100,000, FIRE_S 8 (about 4 minutes in all; the full run takes about 12). Prints a table and
writes bench/results/time.json (bench/results/time-quick.json with --quick), with the load
average after each part: on PostgreSQL every due task costs the loop several round trips, so a
busy machine shows in the lags. Asserts nothing (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import idle  # bench/idle.py: fill() makes the history, cpu_ticks() reads /proc
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

import service
from service.storage.db import db_now, make_engine

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PG_ADMIN = os.environ.get("TENURE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SPREAD_S = 4.0
WARM_S = 5.0  # after a worker starts: start-up done, spare task processes forked
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")  # whole-hour offsets: minutes stay minutes


# -- databases and workers ------------------------------------------------------------------


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh, migrated database's URL; a PostgreSQL one is dropped afterwards."""
    if backend == "SQLite":
        url = str(tmp / f"time-{uuid.uuid4().hex[:8]}.db")
        service.open(url).close()
        yield url
        return
    name = f"tenure_time_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    try:
        service.open(url).close()
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def workers(url: str, count: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", url, "--log-level", "WARNING"],
                              cwd=REPO) for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


def wait_live(t: service.Tenure, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with t.engine.connect() as conn:
            live = conn.execute(text("SELECT count(*) FROM supervisors WHERE stopped_at IS NULL")).scalar_one()
        if live >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{count} supervisors did not start within {timeout_s:g} s")


def db_time(t: service.Tenure) -> datetime:
    """The database's now, naive UTC."""
    with t.engine.connect() as conn:
        return _dt(conn.execute(select(db_now())).scalar_one())


def _dt(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def ms_between(later: object, earlier: object) -> float:
    return (_dt(later) - _dt(earlier)).total_seconds() * 1000


def stats(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"n": 0}
    xs = sorted(ms)
    p99 = xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]
    return {"n": len(xs), "min": xs[0], "p50": statistics.median(xs), "p99": p99, "max": xs[-1]}


def start_lags(t: service.Tenure, ids: list[int]) -> list[float]:
    with t.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT tasks.scheduled_for, task_attempts.started_at FROM tasks JOIN task_attempts "
            "ON task_attempts.task_id = tasks.id AND task_attempts.attempt = 1 "
            "WHERE tasks.id >= :lo AND tasks.id <= :hi"),
            {"lo": min(ids), "hi": max(ids)}).all()
    wanted = len(ids)
    if len(rows) != wanted:
        print(f"    ({wanted - len(rows)} of {wanted} tasks have no attempt)")
    return [ms_between(started, due) for due, started in rows]


# -- 1. start lag after idle ----------------------------------------------------------------


def delayed_after_idle(url: str, idle_s: float, n: int) -> dict[str, Any]:
    t = service.open(url)
    with workers(url):
        t.wait_task(t.submit_task("echo", {}), 60)  # the worker is up, its task processes warm
        base = db_time(t).replace(tzinfo=UTC) + timedelta(seconds=idle_s)
        submitted = time.monotonic()
        ids = [t.submit_task("echo", {}, start_at=base + timedelta(seconds=SPREAD_S * i / n)) for i in range(n)]
        submit_s = time.monotonic() - submitted
        for task_id in ids:
            t.wait_task(task_id, idle_s + SPREAD_S + 60)
        lags = start_lags(t, ids)
    t.close()
    return {"idle_s": idle_s, "tasks": n, "spread_s": SPREAD_S, "submit_s": round(submit_s, 2), **stats(lags)}


def earlier_while_asleep(url: str, samples: int) -> dict[str, Any]:
    t = service.open(url)
    rng = random.Random(7)
    with workers(url):
        t.wait_task(t.submit_task("echo", {}), 60)
        # The worker sleeps toward this one (under the 180 s past which a due time counts as set
        # by a stepped clock, see held_far_ahead).
        far = t.submit_task("echo", {}, delay_s=150)
        time.sleep(3)
        ids = []
        for _ in range(samples):
            time.sleep(rng.uniform(0.2, 0.5))
            ids.append(t.submit_task("echo", {}, delay_s=rng.uniform(0.2, 0.8)))
            t.wait_task(ids[-1], 30)
        far_status = t.task(far).status
        lags = start_lags(t, ids)
    t.close()
    return {"samples": samples, "far_task_meanwhile": far_status, **stats(lags)}


def held_far_ahead(url: str, delay_s: float = 600.0, watch_s: float = 5.0) -> dict[str, Any]:
    """Whether a task delayed by ``delay_s`` is held that long by a running worker: its attempt's
    start against its due time (negative: it started early)."""
    t = service.open(url)
    with workers(url):
        t.wait_task(t.submit_task("echo", {}), 60)
        task_id = t.submit_task("echo", {}, delay_s=delay_s)
        time.sleep(watch_s)
        lags = start_lags(t, [task_id]) if t.attempts(task_id) else []
    t.close()
    return {"delay_s": delay_s, "watched_s": watch_s, "started": bool(lags),
            "started_early_by_s": round(-lags[0] / 1000, 1) if lags else None}


# -- 2. idle CPU with 1,000 schedules over a big history ------------------------------------


def add_schedules(t: service.Tenure, count: int, avoid_minutes: set[int]) -> dict[str, int]:
    """Daily, hourly and weekly schedules at minutes outside ``avoid_minutes`` (UTC minutes: the
    zones are whole hours off), and 5 every minute."""
    rng = random.Random(11)
    minutes = [m for m in range(60) if m not in avoid_minutes]
    made = {"daily": 0, "hourly": 0, "weekly": 0, "every minute": 0}
    for i in range(count):
        if i < 5:
            kind, expr = "every minute", "* * * * *"
        elif i % 10 < 6:
            kind, expr = "daily", f"{rng.choice(minutes)} {rng.randrange(24)} * * *"
        elif i % 10 < 9:
            kind, expr = "hourly", f"{rng.choice(minutes)} * * * *"
        else:
            kind, expr = "weekly", f"{rng.choice(minutes)} {rng.randrange(24)} * * {rng.randrange(7)}"
        t.add_schedule(f"bench-{i:04d}", expr, timezone=ZONES[i % len(ZONES)], task={"kind": "echo", "args": {"i": i}})
        made[kind] += 1
    return made


def counts(t: service.Tenure) -> tuple[int, int]:
    with t.engine.connect() as conn:
        fires = conn.execute(text("SELECT count(*) FROM schedule_fires")).scalar_one()
        attempts = conn.execute(text("SELECT count(*) FROM task_attempts")).scalar_one()
    return int(fires), int(attempts)


def worker_cpu(t: service.Tenure, url: str, idle_s: float) -> dict[str, Any]:
    with workers(url) as (proc,):
        time.sleep(WARM_S)
        fires, attempts = counts(t)
        before, start = idle.cpu_ticks(proc.pid), time.monotonic()
        time.sleep(idle_s)
        used = (idle.cpu_ticks(proc.pid) - before) / os.sysconf("SC_CLK_TCK")
        wall = time.monotonic() - start
        fires_after, attempts_after = counts(t)
    return {"cpu_pct": 100 * used / wall, "cpu_s": used, "wall_s": wall, "fires": fires_after - fires,
            "attempts": attempts_after - attempts}


def embedded_cpu(url: str, idle_s: float) -> dict[str, Any]:
    """An embedded supervisor in a child process (``--embedded``): CPU of it and its task
    processes, and its loop turns, over the same window."""
    child = subprocess.Popen([sys.executable, __file__, "--embedded", url, str(idle_s)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "go"
        before, start = idle.cpu_ticks(child.pid), time.monotonic()
        report = json.loads(child.stdout.readline())
        used = (idle.cpu_ticks(child.pid) - before) / os.sysconf("SC_CLK_TCK")
        wall = time.monotonic() - start
    finally:
        child.wait(60)
    return {"cpu_pct": 100 * used / wall, "cpu_s": used, "wall_s": wall, **report}


def run_embedded(url: str, idle_s: float) -> None:
    t = service.open(url)
    sup = t.start_supervisor()
    try:
        time.sleep(WARM_S)
        turns, cpu = sup.loop_turns, os.times()
        print("go", flush=True)
        time.sleep(idle_s)
        after = os.times()
        print(json.dumps({"loop_turns": sup.loop_turns - turns,
                          "own_cpu_s": round(after.user + after.system - cpu.user - cpu.system, 3)}), flush=True)
    finally:
        sup.stop(grace_s=0.0)
        t.close()


def idle_with_schedules(url: str, idle_s: float, history: int, schedules: int) -> dict[str, Any]:
    t = service.open(url)
    now = db_time(t)
    # Nothing but the every-minute ones may fire while this part runs (fill + two windows).
    span_min = int((2 * (idle_s + WARM_S) + 600) // 60) + 2
    avoid = {(now.minute + k) % 60 for k in range(-1, span_min)}
    started = time.monotonic()
    made = add_schedules(t, schedules, avoid)
    schedules_s = time.monotonic() - started
    started = time.monotonic()
    idle.fill(url, history)
    fill_s = time.monotonic() - started
    print(f"    ({schedules} schedules in {schedules_s:.1f} s, {history:,} finished tasks in {fill_s:.0f} s)")
    out = {"schedules": made, "history": history, "idle_s": idle_s,
           "worker": worker_cpu(t, url, idle_s), "embedded": embedded_cpu(url, idle_s)}
    t.close()
    return out


# -- 3. fire lag ----------------------------------------------------------------------------


def fire_lag(url: str, seconds: float, count: int = 5) -> dict[str, Any]:
    t = service.open(url)
    with workers(url, 2):
        wait_live(t, 2)
        time.sleep(WARM_S)
        for i in range(count):
            t.add_schedule(f"every-second-{i}", "* * * * * *", task={"kind": "echo", "args": {"i": i}})
        first = db_time(t).replace(microsecond=0) + timedelta(seconds=2)  # slots from here on are counted
        time.sleep(seconds + 2)
        end = db_time(t).replace(microsecond=0) - timedelta(seconds=1)  # ... up to before here (all fired by now)
        for i in range(count):
            t.pause_schedule(f"every-second-{i}")
        time.sleep(1)
        with t.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT f.schedule_id, f.slot_at, f.fired_at, f.outcome, a.started_at FROM schedule_fires f "
                "LEFT JOIN task_attempts a ON a.task_id = f.task_id AND a.attempt = 1 "
                "WHERE f.slot_at >= :first AND f.slot_at < :end"), {"first": first, "end": end}).all()
    t.close()
    expected = count * int((end - first).total_seconds())
    slots = {(r[0], _dt(r[1])) for r in rows}
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r[3]] = outcomes.get(r[3], 0) + 1
    fired = [ms_between(r[2], r[1]) for r in rows]
    by_slot: dict[datetime, list[float]] = {}
    for r in rows:
        by_slot.setdefault(_dt(r[1]), []).append(ms_between(r[2], r[1]))
    # The k-th fire of a slot (by fired_at): one pass fires the due schedules one transaction each.
    ranks = [sorted(lags) for lags in by_slot.values()]
    by_rank = [round(statistics.median(r[k] for r in ranks if len(r) > k), 1) for k in range(count)]
    started = [ms_between(r[4], r[1]) for r in rows if r[4] is not None]
    return {"schedules": count, "seconds": seconds, "expected_slots": expected, "rows": len(rows),
            "missing": expected - len(slots), "doubled": len(rows) - len(slots), "outcomes": outcomes,
            "fire": stats(fired), "fire_p50_by_rank": by_rank, "task_start": stats(started)}


# -- the table -----------------------------------------------------------------------------


def fmt(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "no samples"
    return f"n={s['n']:<4} p50 {s['p50']:7.1f}  p99 {s['p99']:7.1f}  max {s['max']:7.1f} ms"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def summary(results: dict[str, Any]) -> None:
    print("\nsummary (targets: start lag p99 <= 50 ms, idle CPU < 2 % of a core)")
    for backend, r in results["backends"].items():
        print(f"  {backend}")
        if "after_idle" in r:
            a = r["after_idle"]
            print(f"    delayed tasks after {a['idle_s']:g} s idle   {fmt(a)}  [{verdict(a['p99'] <= 50)}]")
        if "earlier" in r:
            e = r["earlier"]
            print(f"    earlier task while asleep      {fmt(e)}  [{verdict(e['p99'] <= 50)}]")
        if "held" in r:
            h = r["held"]
            print(f"    a task due in {h['delay_s']:g} s               "
                  + (f"STARTED {h['started_early_by_s']} s EARLY (within {h['watched_s']:g} s of its submit)"
                     if h["started"] else f"held (watched {h['watched_s']:g} s)"))
        if "idle" in r:
            i = r["idle"]
            w, em = i["worker"], i["embedded"]
            print(f"    idle `tenure worker`, {sum(i['schedules'].values())} schedules, {i['history']:,} finished: "
                  f"{w['cpu_pct']:.2f} % of a core over {w['wall_s']:.0f} s ({w['fires']} fires, "
                  f"{w['attempts']} attempts meanwhile)  [{verdict(w['cpu_pct'] < 2)}]")
            print(f"    idle embedded supervisor:      {em['cpu_pct']:.2f} % of a core, "
                  f"{em['loop_turns']} loop turns ({em['loop_turns'] / em['wall_s']:.1f}/s) over {em['wall_s']:.0f} s"
                  f"  [{verdict(em['cpu_pct'] < 2)}]")
        if "fires" in r:
            f = r["fires"]
            print(f"    fire lag, {f['schedules']} x every second, 2 workers  {fmt(f['fire'])}  "
                  f"(missing {f['missing']}, doubled {f['doubled']}, {f['outcomes']})")
            print(f"    slot to task start             {fmt(f['task_start'])}")
            print(f"    fire lag p50 of a slot's 1st..{f['schedules']}th fire: {f['fire_p50_by_rank']} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short idle, smaller history")
    parser.add_argument("--idle-s", type=float, help="seconds idle (default 60; 10 with --quick)")
    parser.add_argument("--tasks", type=int, default=200, help="delayed tasks (default 200)")
    parser.add_argument("--history", type=int, help="finished tasks (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--fire-s", type=float, help="seconds of every-second schedules (default 20; 8 quick)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append",
                        help="only this backend (repeatable; default both)")
    parser.add_argument("--part", type=int, choices=(1, 2, 3), action="append", help="only this part (repeatable)")
    parser.add_argument("--embedded", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.embedded:
        run_embedded(args.embedded[0], float(args.embedded[1]))
        return
    idle_s = args.idle_s if args.idle_s is not None else (10.0 if args.quick else 60.0)
    history = args.history if args.history is not None else (100_000 if args.quick else 1_000_000)
    fire_s = args.fire_s if args.fire_s is not None else (8.0 if args.quick else 20.0)
    backends = [b for b in ("SQLite", "PostgreSQL") if not args.backend or b.lower() in args.backend]
    parts = set(args.part or (1, 2, 3))
    tmp = Path(tempfile.mkdtemp(prefix="tenure-time-"))
    results: dict[str, Any] = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
                               "cpus": os.cpu_count(), "backends": {}}
    for backend in backends:
        r: dict[str, Any] = results["backends"].setdefault(backend, {})
        if 1 in parts:
            print(f"{backend}: {args.tasks} delayed tasks due after {idle_s:g} s idle ...", flush=True)
            with database(backend, tmp) as url:
                r["after_idle"] = delayed_after_idle(url, idle_s, args.tasks)
            r["after_idle"]["loadavg"] = os.getloadavg()
            print(f"  {fmt(r['after_idle'])}")
            print(f"{backend}: earlier tasks submitted while the worker sleeps toward a later one ...", flush=True)
            with database(backend, tmp) as url:
                r["earlier"] = earlier_while_asleep(url, 10 if args.quick else 30)
            r["earlier"]["loadavg"] = os.getloadavg()
            print(f"  {fmt(r['earlier'])}")
            with database(backend, tmp) as url:
                r["held"] = held_far_ahead(url)
            h = r["held"]
            print(f"  a task due in {h['delay_s']:g} s: " + (f"started {h['started_early_by_s']} s early"
                                                           if h["started"] else f"held ({h['watched_s']:g} s watched)"))
        if 2 in parts:
            print(f"{backend}: idle worker, {args.schedules} schedules over {history:,} finished tasks ...", flush=True)
            with database(backend, tmp) as url:
                r["idle"] = idle_with_schedules(url, idle_s, history, args.schedules)
            r["idle"]["loadavg"] = os.getloadavg()
            i = r["idle"]
            print(f"  worker {i['worker']['cpu_pct']:.2f} % of a core; embedded {i['embedded']['cpu_pct']:.2f} %, "
                  f"{i['embedded']['loop_turns']} loop turns")
        if 3 in parts:
            print(f"{backend}: schedules every second, 2 workers, {fire_s:g} s ...", flush=True)
            with database(backend, tmp) as url:
                r["fires"] = fire_lag(url, fire_s)
            r["fires"]["loadavg"] = os.getloadavg()
            print(f"  fire {fmt(r['fires']['fire'])}")
    summary(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("time-quick.json" if args.quick else "time.json")
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
