"""``tenure queues``; ``tenure queue show|set|pause|resume NAME``; ``tenure key set NAME``;
``tenure run pause|resume ID``: flow control from the terminal.

The run verbs sit beside ``tenure runs`` as the schedule verbs sit beside ``tenure schedules``.
A limit is a whole number from 1, or ``none`` to remove it; a rate is starts per period (``10/s``,
``100/m``, ``5/30s``) or ``none``. Flags are checked before the database is opened; bad input is
one line on stderr and exit 2, having written nothing. ``tenure queues`` piped is one
tab-separated line per queue (as ``tenure runs`` is), with raw numbers.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from service.config import check_queue_name, parse_duration
from service.errors import InvalidInput
from service.faces import client, summary
from service.faces.cli import EXIT_BAD_INPUT, _open_existing, db_url
from service.faces.flow import check_limit, parse_rate, plan_flow
from service.storage.flow import UNSET, KeyView, QueueView

# `tenure queues` piped: the header line of its tab-separated output
QUEUES_COLUMNS = ("queue", "paused", "waiting", "due", "running", "limit", "rate", "oldest wait (s)")
NONE = "none"  # the word that removes a limit

log = logging.getLogger("tenure.cli")


def add_commands(sub: Any, db: argparse.ArgumentParser) -> None:
    p = sub.add_parser("queues", parents=[db], help="every queue: waiting, running against its limit, its rate")
    p.set_defaults(command="queues", handler=cmd_list)

    p = sub.add_parser("queue", parents=[db], help="show, set, pause or resume a queue")
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    p.set_defaults(command="queue", handler=_usage_of(p))
    a = actions.add_parser("set", parents=[db], help="declare a queue and set its limits (a limit not given stays)",
                           description="Declares queue NAME. Once any queue is declared, submits to a queue "
                                       "that does not exist yet are refused.")
    a.add_argument("name", metavar="NAME")
    _limit_flags(a, "of this queue's tasks")
    a.add_argument("--age", metavar="DURATION",
                   help="a task waiting longer than this goes ahead of higher priorities, like 5m (default 5m)")
    a.set_defaults(handler=cmd_set)
    for action, handler, text in (
        ("show", cmd_show, "a queue's limits, what waits in it and what runs"),
        ("pause", cmd_pause, "start nothing of it on any worker until resumed; what runs finishes"),
        ("resume", cmd_resume, "start its tasks again"),
    ):
        one = actions.add_parser(action, parents=[db], help=text)
        one.add_argument("name", metavar="NAME")
        one.set_defaults(handler=handler)

    p = sub.add_parser("key", parents=[db], help="set the limits of a concurrency key")
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    p.set_defaults(command="key", handler=_usage_of(p))
    a = actions.add_parser("set", parents=[db], help="the most tasks with this key running at once, and their rate")
    a.add_argument("name", metavar="NAME")
    _limit_flags(a, "of the tasks with this key, on every host")
    a.set_defaults(handler=cmd_key)

    p = sub.add_parser("run", parents=[db], help="pause or resume a run")
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    p.set_defaults(command="run", handler=_usage_of(p))
    for action, handler, text in (
        ("pause", cmd_pause_run, "start none of its tasks until resumed; what runs finishes"),
        ("resume", cmd_resume_run, "start its tasks again"),
    ):
        one = actions.add_parser(action, parents=[db], help=text)
        one.add_argument("run", type=int, metavar="ID", help="run id")
        one.set_defaults(handler=handler)


def _limit_flags(p: argparse.ArgumentParser, whose: str) -> None:
    p.add_argument("--limit", metavar="N|none", help=f"the most running at once {whose}; none: no limit")
    p.add_argument("--rate", metavar="RATE|none", help=f"the most starts per period {whose}, like 10/s, 100/m "
                                                         "or 5/30s; none: no limit")


def _usage_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A handler for a command given without its action: its help on stderr, exit 2."""
    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    return usage


# -- commands ----------------------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    t = _open_existing(args)
    try:
        found = t.queues()
    finally:
        t.close()
    hint = "no queues yet: the first submit makes `default`; `tenure queue set NAME` declares one"
    if not sys.stdout.isatty():
        # Piped or redirected: one line per queue, tab-separated, for cut, awk and sort.
        print("\t".join(QUEUES_COLUMNS))
        for q in found:
            oldest = "" if q.oldest_wait_s is None else f"{q.oldest_wait_s:.1f}"
            print("\t".join((q.name, "paused" if q.paused else "", str(q.waiting), str(q.due), str(q.running),
                             "" if q.concurrency is None else str(q.concurrency), q.rate or "", oldest)))
        if not found:
            print(hint, file=sys.stderr)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tenure queues")
    for column in ("queue", "paused", "waiting", "running/limit", "rate", "oldest wait"):
        table.add_column(column)
    for q in found:
        table.add_row(q.name, "⏸ paused" if q.paused else "", waiting_words(q), running_of(q), q.rate or "—",
                      summary.format_seconds(None) if q.oldest_wait_s is None else span(q.oldest_wait_s))
    Console(width=shutil.get_terminal_size().columns).print(table)
    if not found:
        print(hint)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    t = _open_existing(args)
    try:
        q = t.queue(args.name)
    finally:
        t.close()
    now = datetime.now(UTC).replace(tzinfo=None)
    state = "active"
    if q.paused and q.paused_at is not None:
        state = (f"paused since {summary.clock_time(q.paused_at, now, 'UTC')} "
                 f"({summary.starts_in(q.paused_at, now, past='{} ago')}): nothing of it starts until "
                 f"`tenure queue resume {q.name}`; what runs finishes")
    waits = "none"
    if q.waiting:
        waits = waiting_words(q) + ("" if q.oldest_wait_s is None else f", the oldest for {span(q.oldest_wait_s)}")
    origin = "declared with `tenure queue set`" if q.declared else "made by a submit, not declared"
    print("\n".join((
        f"queue {q.name} ({origin})",
        f"  state      {state}",
        f"  running    {q.running}" + (f" of at most {q.concurrency}" if q.concurrency is not None else " (no limit)"),
        "  rate       " + (f"at most {q.rate} starts" if q.rate else "no limit"),
        f"  ageing     a task waiting over {span(q.age_s)} goes ahead of higher priorities",
        f"  waiting    {waits}",
    )))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    check_queue_name(args.name)  # everything is checked before the database is opened
    limits: dict[str, Any] = {"concurrency": limit(args.limit), "rate": rate(args.rate),
                              "age_s": UNSET if args.age is None else parse_duration(args.age, "--age")}
    t = client.open(db_url(args))  # declaring a queue may be the first thing done to a new database
    try:
        q = t.set_queue(args.name, **limits)
    finally:
        t.close()
    print(f"queue {q.name}: {limits_words(q.concurrency, q.rate)}; a task waiting over {span(q.age_s)} goes ahead "
          f"of higher priorities" + ("; paused" if q.paused else ""))
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    t = _open_existing(args)
    try:
        q = t.pause_queue(args.name)
    finally:
        t.close()
    running = f"; the {q.running} running finish" if q.running else ""
    print(f"paused queue {q.name}: nothing of it starts until `tenure queue resume {q.name}` "
          f"({q.waiting} waiting{running})")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    t = _open_existing(args)
    try:
        q = t.resume_queue(args.name)
    finally:
        t.close()
    # Read after the resume: a worker woken by it may have started some already.
    print(f"resumed queue {q.name}: its tasks may start again ({q.waiting} waiting, {q.running} running)")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    plan_flow(key=args.name)  # checked before the database is opened, as the limits are
    limits: dict[str, Any] = {"concurrency": limit(args.limit), "rate": rate(args.rate)}
    t = client.open(db_url(args))
    try:
        k: KeyView = t.set_key(args.name, **limits)
    finally:
        t.close()
    rate_text = k.rate
    print(f"key {k.name}: {limits_words(k.concurrency, rate_text)}; {k.running} running now")
    return 0


def cmd_pause_run(args: argparse.Namespace) -> int:
    if _pause_run(args, paused=True):
        print(f"paused run {args.run}: none of its tasks starts until `tenure run resume {args.run}`; "
              "what runs finishes")
    else:
        print(f"run {args.run} was paused already (`tenure run resume {args.run}` resumes it)")
    return 0


def cmd_resume_run(args: argparse.Namespace) -> int:
    if _pause_run(args, paused=False):
        print(f"resumed run {args.run}: its waiting tasks may start")
    else:
        print(f"run {args.run} was not paused; nothing changed")
    return 0


# -- helpers -----------------------------------------------------------------------------

def _pause_run(args: argparse.Namespace, paused: bool) -> bool:
    t = _open_existing(args)
    try:
        return t.pause_run(args.run) if paused else t.resume_run(args.run)
    finally:
        t.close()


def limit(text: str | None, flag: str = "--limit") -> int | None:
    """``--limit``: UNSET when not given, None for ``none``, else a checked whole number. Raises InvalidInput."""
    if text is None:
        return UNSET  # type: ignore[no-any-return]
    if text.strip().lower() == NONE:
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"{flag} takes a whole number from 1 (the most running at once) or none (no limit), "
                           f"got {text!r}") from None
    return check_limit(value, flag)


def rate(text: str | None, flag: str = "--rate") -> tuple[int, float] | None:
    """``--rate``: UNSET when not given, None for ``none``, else (starts, period in seconds). Raises InvalidInput."""
    if text is None:
        return UNSET  # type: ignore[no-any-return]
    return None if text.strip().lower() == NONE else parse_rate(text, flag)


def limits_words(concurrency: int | None, rate_text: str | None) -> str:
    running = "no limit on running tasks" if concurrency is None else f"at most {concurrency} running"
    return f"{running}, " + (f"at most {rate_text} starts" if rate_text else "no rate limit")


def running_of(q: QueueView) -> str:
    """``3/4`` against a limit of 4; ``3`` when there is none."""
    return str(q.running) if q.concurrency is None else f"{q.running}/{q.concurrency}"


def waiting_words(q: QueueView) -> str:
    """``6``, or ``6 (2 later)`` when some wait for a later start or a retry's backoff."""
    later = q.waiting - q.due
    return f"{q.waiting}" + (f" ({later} later)" if later > 0 else "")


def span(seconds: float) -> str:
    """A stretch of time as coarse as a person says it ("40 s", "3 min", "5 h", "12 days")."""
    if seconds < 0.5:
        return "under 1 s"
    start = datetime(2000, 1, 1)
    return summary.starts_in(start, start + timedelta(seconds=seconds), past="{}")


def served(t: client.Tenure, queues: tuple[str, ...] | None) -> None:
    """Log which queues a worker takes tasks from; warn of a named queue nobody can submit to
    (some queues are declared, and not it), as a typo would be."""
    if queues is None:
        return
    log.info("worker.queues queues=%s", ",".join(queues))
    known = t.queues()
    declared = sorted(q.name for q in known if q.declared)
    for name in queues:
        if declared and name not in {q.name for q in known}:
            log.warning("worker.queue_undeclared queue=%s declared=%s: submits to it are refused until "
                        "`tenure queue set %s` declares it", name, ",".join(declared), name)
