"""The ``tenure`` command's engine commands (``python -m service``; ``tenure`` adds ``serve``).

Every command takes ``--db`` (a SQLAlchemy URL or a file path; else ``TENURE_DB``; else
``./tenure.db``). Bad input prints one line on stderr and exits non-zero, having written nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from service.config import Settings, parse_duration, parse_memory, parse_queues
from service.errors import InvalidInput, NotFound, SchemaError, StorageError, TenureError
from service.faces import client, logs, schedules, summary
from service.storage import schema
from service.storage.db import make_engine, normalize_url, sqlite_path
from service.storage.views import RunView
from service.supervisor.loop import Supervisor

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C ended

# `tenure runs` piped: the header line of its tab-separated output
RUNS_COLUMNS = ("id", "name", "kind", "status", "tasks", "succeeded", "failed", "created (UTC)", "duration")

log = logging.getLogger("tenure.cli")


Extend = Callable[[Any, argparse.ArgumentParser], None]


def main(argv: Sequence[str] | None = None, extend: Extend | None = None) -> int:
    """Run one command; returns its exit code. ``extend(subparsers, common)`` adds commands
    from layers above the engine (``web.cli`` adds ``serve``): this package never imports them."""
    parser = build_parser(extend)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        load_plugins(getattr(args, "imports", []))
        return int(args.handler(args) or 0)
    except (InvalidInput, NotFound, SchemaError) as exc:
        print(f"tenure: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TenureError as exc:
        print(f"tenure: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def load_plugins(modules: Sequence[str]) -> None:
    """Import the modules that register the user's task kinds (flags, then TENURE_IMPORT).

    Raises:
        InvalidInput: a module cannot be imported.
    """
    names = [*modules, *(m.strip() for m in os.environ.get("TENURE_IMPORT", "").split(",") if m.strip())]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure to import is the user's to fix
            raise InvalidInput(f"could not import {name!r} for its task kinds: {exc}") from None


def build_parser(extend: Extend | None = None) -> argparse.ArgumentParser:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", default=argparse.SUPPRESS,
                    help="database URL or file path (default: $TENURE_DB, else ./tenure.db)")
    db.add_argument("--import", dest="imports", action="append", default=argparse.SUPPRESS, metavar="MODULE",
                    help="import MODULE first, so the task kinds it registers exist (also $TENURE_IMPORT, "
                         "comma-separated)")
    parser = argparse.ArgumentParser(prog="tenure", parents=[db],
                                     description="A persistent, crash-recoverable job service.")
    parser.set_defaults(command=None)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    from service.faces import cli_queues, cli_schedules, cli_submit  # they use this module's helpers

    p = sub.add_parser("migrate", parents=[db], help="create or upgrade the database schema")
    p.set_defaults(command="migrate", handler=cmd_migrate)

    cli_submit.add_submit(sub, db)

    p = sub.add_parser("worker", parents=[db], help="run a supervisor until SIGTERM or Ctrl-C")
    p.add_argument("--concurrency", type=int, help="tasks run at once (default 64)")
    p.add_argument("--lease-ttl", type=float, help="seconds a lease lives without a heartbeat (default 15)")
    p.add_argument("--heartbeat", type=float, help="seconds between heartbeats (default 5)")
    p.add_argument("--grace", type=float, help="seconds a graceful stop waits for running tasks (default 5)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve this worker's Prometheus metrics at http://HOST:PORT/metrics (default: none)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address of the metrics server (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--metrics-db", action="store_true",
                   help="expose the database's figures too (tasks, attempts, supervisors alive): from one "
                        "process only, or a sum over workers counts them once per worker")
    memory_flag(p)
    queues_flag(p)
    log_flags(p)
    p.set_defaults(command="worker", handler=cmd_worker)

    if extend is not None:
        extend(sub, db)

    p = sub.add_parser("watch", parents=[db], help="a live progress bar of a run, then its summary")
    p.add_argument("run", type=int, help="run id")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between refreshes")
    p.set_defaults(command="watch", handler=cmd_watch)

    p = sub.add_parser("prune", parents=[db], help="delete runs and single tasks that ended long ago")
    p.add_argument("--older-than", required=True, metavar="AGE", help="like 30d, 12h or 90m")
    p.add_argument("--batch", type=int, default=50,
                   help="tasks the first transaction deletes; later ones are sized to take about 20 ms (default 50)")
    p.set_defaults(command="prune", handler=cmd_prune)

    p = sub.add_parser("runs", parents=[db], help="run history, latest first")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(command="runs", handler=cmd_runs)
    cli_schedules.add_commands(sub, db)
    cli_queues.add_commands(sub, db)
    return parser


def memory_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="memory limit of each task's process, like 512M or 2G; 0 for none "
                        "(default: $TENURE_MEMORY_LIMIT, else 2G)")


def queues_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queues", metavar="NAMES",
                   help="take tasks of these queues only, comma-separated like imports,mail "
                        "(default: $TENURE_QUEUES, else every queue)")


def settings_from(args: argparse.Namespace, **flags: Any) -> Settings:
    """Settings from the environment, then these flags (None: not given)."""
    settings = Settings.from_env(**flags)
    if getattr(args, "memory_limit", None) is not None:
        settings = dataclasses.replace(settings, memory_limit_mb=parse_memory(args.memory_limit))
    if getattr(args, "queues", None) is not None:
        settings = dataclasses.replace(settings, queues=parse_queues(args.queues, "--queues"))
    return settings


# -- commands ----------------------------------------------------------------------------

def cmd_migrate(args: argparse.Namespace) -> int:
    engine = make_engine(db_url(args))
    try:
        before = schema.migrate(engine)
    finally:
        engine.dispose()
    print(f"schema at {schema.head_revision()} (was {before.value})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    older_than = parse_duration(args.older_than)
    t = _open_existing(args)
    try:
        report = t.prune(older_than, batch=args.batch)
    finally:
        t.close()
    n = summary.counted
    print(f"pruned {n(report.runs, 'run')}, {n(report.tasks, 'task')}, {n(report.attempts, 'attempt')} and "
          f"{n(report.supervisors, 'supervisor')} that ended over {args.older_than} ago, in {report.seconds:.1f} s "
          f"({n(report.batches, 'batch')}; the longest held the write lock {report.longest_batch_s * 1000:.0f} ms)")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    log.debug("worker.imported")  # start-up milestones: bench/startup.py reads their times
    settings = settings_from(args, concurrency=args.concurrency, lease_ttl_s=args.lease_ttl,
                         heartbeat_s=args.heartbeat, shutdown_grace_s=args.grace)
    from prometheus_client import ProcessCollector

    from service.supervisor import metrics

    if args.metrics_db and args.metrics_port is None:
        raise InvalidInput("--metrics-db goes with --metrics-port, which serves the figures")
    exposed, server = metrics.Together(ProcessCollector(registry=None)), None
    if args.metrics_port is not None:  # taken before the database is opened: a busy port writes nothing
        server = metrics.serve(args.metrics_host, args.metrics_port, exposed)
    t = client.open(db_url(args))
    log.debug("worker.database_open")
    from service.faces.cli_queues import served

    served(t, settings.queues)
    schedules.sync_defined(t.store)  # many workers starting together write each definition once
    supervisor = Supervisor(t.engine, settings, clock=t.clock)
    exposed.add(supervisor.metrics.registry)
    if args.metrics_db:
        exposed.add(metrics.DatabaseCollector(t.engine, settings.lease_ttl_s))
    install_stop_signals(supervisor)  # before it claims anything: a SIGTERM from then on is graceful
    supervisor.start()
    if server is not None:
        log.info("metrics.serving url=http://%s:%s/metrics", args.metrics_host, args.metrics_port)
    # Wake now and then: a signal delivered to another thread runs its Python handler only
    # when the main thread next runs bytecode, which an untimed wait would never do.
    while not supervisor.stopped.wait(0.2):
        pass
    if server is not None:
        server.shutdown()
    t.close()
    if supervisor.fatal is not None:
        print(f"tenure: error: the supervisor stopped: {supervisor.fatal}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def install_stop_signals(supervisor: Any) -> None:
    """First SIGTERM/SIGINT: graceful stop. Second: stop now (release leases, no waiting)."""
    count = {"n": 0}

    def handle(signum: int, _frame: Any) -> None:
        count["n"] += 1
        supervisor.request_stop(grace_s=0.0 if count["n"] > 1 else None)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def cmd_watch(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    t = _open_existing(args)
    console = Console(stderr=False)
    try:
        run = t.run(args.run)
        columns = (TextColumn("run {task.fields[run]}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[detail]}"))
        try:
            with Progress(*columns, console=console, transient=False) as bar:
                row = bar.add_task("run", total=run.total, run=run.id, detail="")
                while True:
                    status = t.run_status(args.run)
                    run, tasks = status.run, status.tasks or []
                    p = summary.progress(run, tasks, status.now)
                    bar.update(row, completed=run.done, detail=watch_detail(run, p, status.ahead, status.workers,
                                                                               status.now, status.held))
                    if not run.live:
                        break
                    time.sleep(args.interval)  # a terminal refresh pace, not a synchronization
        except KeyboardInterrupt:
            # Watching only reads: the run goes on in its workers, so say so rather than exit silently.
            print(f"stopped watching; run {run.id} carries on (tenure watch {run.id} to look again)", file=sys.stderr)
            return EXIT_INTERRUPTED
        _print_summary(console, run, summary.summarize(run, tasks, status.outcomes or {}))
    finally:
        t.close()
    return 0


def watch_detail(run: RunView, p: summary.Progress, ahead: int | None = None, workers: int | None = None,
                 now: datetime | None = None, held: str | None = None) -> str:
    """The text beside the bar: counts, then the time so far and the time left if there is an
    estimate (or what it waits for, or when it starts if it was made to start later); once the
    run has ended, how long it took (as the page's bar says it)."""
    c = run.counts
    counts = f"✓ {c.get('succeeded', 0)}  ✗ {c.get('failed', 0)}  ▶ {c.get('running', 0)}  ↻ {c.get('retrying', 0)}"
    if not run.live:
        return f"{counts}  · {run.status} in {summary.format_seconds(p.elapsed_s)}"
    later = summary.not_yet(run, now) if now is not None else None
    if later:
        return f"{counts}  · {later}"
    waiting = summary.waiting(ahead, workers, held)
    if waiting:
        left = f"  · {waiting}"
    else:
        left = "" if p.eta_s is None else f"  · about {summary.format_seconds(p.eta_s)} left"
    return f"{counts}  · {summary.format_seconds(p.elapsed_s)} elapsed{left}"


def _print_summary(console: Any, run: RunView, s: summary.Summary) -> None:
    console.print(f"run {run.id} {run.status} in {summary.format_seconds(s.duration_s)}: "
                  f"{s.succeeded} succeeded, {s.failed} failed, {s.cancelled} cancelled")
    extras = []
    # The same facts in the same words as the page's summary (web/templates/_summary.html).
    if s.retries:
        extras.append(f"{summary.counted(s.retries, 'retry')} after a failure")
    if s.recovered:
        extras.append(f"{summary.counted(s.recovered, 'attempt')} re-run after a crash, none charged")
    if s.released:
        extras.append(f"{s.released} handed over at a restart, none charged")
    if extras:
        console.print("  " + "; ".join(extras))
    for why, n in s.failures:
        console.print(f"  ✗ {n} × {why}", markup=False)
    if s.slowest:
        slow = ", ".join(f"#{pos} {summary.format_seconds(sec)}" for pos, sec in s.slowest)
        console.print(f"  slowest: {slow}")


_ONE_FIELD = str.maketrans("\t\r\n", "   ")  # a name's tabs and line breaks would split its line


def cmd_runs(args: argparse.Namespace) -> int:
    t = _open_existing(args)
    try:
        runs = t.runs(limit=max(1, args.limit))
    finally:
        t.close()
    rows = [(str(r.id), r.name or "", r.kind, r.status, str(r.total), str(r.counts["succeeded"]),
             str(r.counts["failed"]), r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
             summary.format_seconds((r.finished_at - summary.began(r)).total_seconds()) if r.finished_at else "")
            for r in runs]
    hint = "no runs yet: `tenure submit` starts one"
    if not sys.stdout.isatty():
        # Piped or redirected: one line per run, tab-separated and never cut, for cut, awk and sort.
        print("\t".join(RUNS_COLUMNS))
        for row in rows:
            print("\t".join(cell.translate(_ONE_FIELD) for cell in row))
        if not runs:
            print(hint, file=sys.stderr)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tenure runs, latest first")
    for column in ("id", "name", "kind", "status", "tasks", "✓", "✗", "created (UTC)", "duration"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row[:-1], row[-1] or summary.format_seconds(None))
    Console(width=shutil.get_terminal_size().columns).print(table)
    if not runs:
        print(hint)
    return 0


# -- helpers -----------------------------------------------------------------------------

def db_url(args: argparse.Namespace) -> str:
    return normalize_url(getattr(args, "db", None))


def _open_existing(args: argparse.Namespace) -> client.Tenure:
    """Open a database for reading; never creates one."""
    url = db_url(args)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise StorageError(f"there is no database at {path}; `tenure submit` or `tenure migrate` creates one")
    return client.open(url, migrate=False)


def log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    p.add_argument("--log-format", help="text (default) or json: one JSON object per line "
                   "with the run, task and attempt ids (also TENURE_LOG_FORMAT)")


def setup_logging(level: str, log_format: str | None = None) -> None:
    """Logs to stderr as text or JSON lines (:mod:`service.faces.logs`). Raises InvalidInput."""
    logs.configure(level, log_format)
