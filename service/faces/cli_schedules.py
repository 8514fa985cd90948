"""``tenure schedules`` and ``tenure schedule add|show|pause|resume|delete|fire``.

A schedule is named on the command line by its name. Times are shown in the schedule's own zone;
``tenure schedules`` piped is one tab-separated line per schedule (as ``tenure runs`` is), with
times in RFC 3339 in that zone. Bad input is one line on stderr and exit 2, having written nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from service.config import parse_duration
from service.cron import from_utc, zone
from service.errors import InvalidInput, NotFound
from service.faces import client, summary
from service.faces import plans as requests
from service.faces.cli import EXIT_BAD_INPUT, _open_existing, db_url
from service.faces.cli_submit import read_jsonl
from service.faces.schedules import plan_schedule
from service.storage.schedules import FireView, ScheduleView

# `tenure schedules` piped: the header line of its tab-separated output
SCHEDULES_COLUMNS = ("name", "cron", "zone", "in words", "next fire", "paused", "last fire", "last outcome")
# The engine names a schedule's fields; a person typed these flags (longest first: catch_up_max before catch_up).
FLAG_OF = (("catch_up_max", "--catch-up-max"), ("catch_up", "--catch-up"), ("grace_s", "--grace"),
           ("timezone", "--tz"), ("overlap", "--overlap"))
T = TypeVar("T")


def add_commands(sub: Any, db: argparse.ArgumentParser) -> None:
    p = sub.add_parser("schedules", parents=[db], help="every schedule: when it fires next, how its last fire went")
    p.set_defaults(command="schedules", handler=cmd_list)

    p = sub.add_parser("schedule", parents=[db], help="add, show, pause, resume, delete or fire a schedule")
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    p.set_defaults(command="schedule", handler=lambda _args: _usage(p))

    a = actions.add_parser("add", parents=[db], help="a cron expression in a zone that starts a task or a run",
                           description="Each slot of CRON (five fields, or six with seconds first; @daily, "
                                       "@hourly, ...) in --tz starts one task (--task) or a whole run (--run).")
    a.add_argument("name", metavar="NAME")
    a.add_argument("cron", metavar="CRON", help="like '0 2 * * *' (02:00 every day) or '*/10 * * * * *' (every 10 s)")
    a.add_argument("--tz", default="UTC", metavar="ZONE", help="IANA zone its times are in (default UTC)")
    what = a.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", metavar="KIND", help="each slot starts one task of KIND")
    what.add_argument("--run", metavar="KIND", help="each slot starts a run of KIND")
    a.add_argument("--args", metavar="JSON", help="--task: its args, a JSON object (default {})")
    a.add_argument("--tasks", metavar="FILE", help="--run: its tasks, one JSON object per line (- reads stdin)")
    a.add_argument("--count", type=int, metavar="N", help="--run: a simulation of N tasks")
    a.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="--count: a parameter of the simulation (VALUE read as JSON if it is, else as text)")
    a.add_argument("--run-name", metavar="NAME", help="--run: each run's name (default: the schedule and slot)")
    a.add_argument("--max-attempts", type=int, metavar="N", help="attempts per task (default 3)")
    a.add_argument("--timeout", type=float, metavar="SECONDS", help="seconds one attempt may run")
    a.add_argument("--catch-up", default="latest", metavar="none|latest|all",
                   help="slots missed while nothing could fire them: none, the latest (default), or all")
    a.add_argument("--catch-up-max", type=int, default=100, metavar="N", help="with all: at most N (default 100)")
    a.add_argument("--overlap", default="skip", metavar="skip|allow|queue",
                   help="a slot while the previous fire's work runs: skip it (default), allow it, queue it")
    a.add_argument("--grace", metavar="DURATION", help="a slot fired later than this was missed (default 30s)")
    a.set_defaults(handler=cmd_add)

    for action, handler, text in (
        ("show", cmd_show, "a schedule's details and its latest fires"),
        ("pause", cmd_pause, "fire nothing until resumed (slots meanwhile are not caught up)"),
        ("resume", cmd_resume, "fire again from the next slot"),
        ("delete", cmd_delete, "delete it and its fire history (the runs and tasks it started stay)"),
        ("fire", cmd_fire, "start its task or run now, outside its slots; prints the run's (or task's) id last"),
    ):
        one = actions.add_parser(action, parents=[db], help=text)
        one.add_argument("name", metavar="NAME")
        one.set_defaults(handler=handler)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_BAD_INPUT


# -- commands ----------------------------------------------------------------------------

def cmd_add(args: argparse.Namespace) -> int:
    options = {"timezone": args.tz, "catch_up": args.catch_up, "catch_up_max": args.catch_up_max,
               "overlap": args.overlap, **_target(args)}
    if args.grace is not None:
        options["grace_s"] = parse_duration(args.grace, "--grace")
    in_flags(lambda: plan_schedule(args.name, args.cron, **options))  # checked before the database is opened
    t = client.open(db_url(args))
    try:
        made = t.add_schedule(args.name, args.cron, **options)
    finally:
        t.close()
    print(f"added schedule {made.name}: {made.description}; {_next(made)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    t = _open_existing(args)
    try:
        found = t.schedules()
    finally:
        t.close()
    now = _now()
    hint = "no schedules yet: `tenure schedule add NAME CRON --task KIND` makes one"
    if not sys.stdout.isatty():
        # Piped or redirected: one line per schedule, tab-separated, for cut, awk and sort.
        print("\t".join(SCHEDULES_COLUMNS))
        for s in found:
            last = s.fires[0] if s.fires else None
            row = (s.name, s.cron, s.timezone, s.description, _iso(s.next_slot_at, s) if not s.paused else "",
                   "paused" if s.paused else "", _iso(_fired_for(last), s) if last else "",
                   fire_words(last) if last else "")
            print("\t".join(" ".join(cell.split()) for cell in row))
        if not found:
            print(hint, file=sys.stderr)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tenure schedules")
    for column in ("name", "when", "next fire", "paused", "last fire"):
        table.add_column(column)
    for s in found:
        last = s.fires[0] if s.fires else None
        table.add_row(s.name, s.description, "—" if s.paused else _at(s.next_slot_at, s, now, ahead=True),
                      "paused" if s.paused else "",
                      f"{_at(_fired_for(last), s, now)}: {fire_words(last)}" if last else "—")
    Console(width=shutil.get_terminal_size().columns).print(table)
    if not found:
        print(hint)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    t = _open_existing(args)
    try:
        s = named(args.name, t.schedule)
    finally:
        t.close()
    now = _now()
    state = "paused: nothing fires until `tenure schedule resume`" if s.paused else "active"
    if s.waiting:
        state += "; a fire waits for the previous one's work to end"
    lines = [
        f"schedule {s.name} (#{s.id}, " + ("defined in code, synced at every worker's start)" if s.origin == "code"
                                         else "added with the CLI or the API)"),
        f"  cron       {s.cron}  ({s.description})",
        f"  starts     {starts(s)}",
        f"  policies   catch-up {s.catch_up}" + (f" (at most {s.catch_up_max})" if s.catch_up == "all" else "")
        + f", overlap {s.overlap}, grace {summary.format_seconds(s.grace_s)}",
        f"  state      {state}",
    ]
    if s.upcoming:
        lines.append("  next       " + ", ".join(_at(slot, s, now, ahead=i == 0) for i, slot in enumerate(s.upcoming)))
    print("\n".join(lines))
    if not s.fires:
        print("no fires yet")
        return 0
    print("latest fires, newest first:")
    for f in s.fires:
        print(f"  {_at(_fired_for(f), s, now):<26} {fire_words(f)}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    s = _change(args, "pause_schedule")
    print(f"paused schedule {s.name}: nothing fires until `tenure schedule resume {s.name}`")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    s = _change(args, "resume_schedule")
    print(f"resumed schedule {s.name}: {_next(s)}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _change(args, "delete_schedule")
    print(f"deleted schedule {args.name} and its fire history; the runs and tasks it started stay")
    return 0


def cmd_fire(args: argparse.Namespace) -> int:
    fired = _change(args, "fire_schedule")
    if fired.run_id is not None:
        print(f"fired schedule {fired.schedule} by hand: run {fired.run_id} (tenure watch {fired.run_id})")
        print(fired.run_id)
    else:
        print(f"fired schedule {fired.schedule} by hand: task {fired.task_id}")
        print(fired.task_id)
    return 0


# -- helpers -----------------------------------------------------------------------------

def _target(args: argparse.Namespace) -> dict[str, Any]:
    """The task or run each slot starts, from the flags. Raises InvalidInput."""
    options = {k: v for k, v in (("max_attempts", args.max_attempts), ("timeout_s", args.timeout)) if v is not None}
    run_only = [flag for flag, given in (("--tasks", args.tasks), ("--count", args.count),
                                          ("--param", args.param), ("--run-name", args.run_name)) if given]
    if args.task is not None:
        if run_only:
            raise InvalidInput(f"{run_only[0]} goes with --run; a --task takes --args")
        try:
            task_args = json.loads(args.args) if args.args is not None else {}
        except ValueError as exc:
            raise InvalidInput(f"--args is not JSON: {exc}") from None
        return {"task": {"kind": args.task, "args": task_args, **options}}
    if args.args is not None:
        raise InvalidInput("--args goes with --task; a --run takes --tasks FILE, or --count N with --param")
    if (args.tasks is None) == (args.count is None):
        raise InvalidInput("--run needs its tasks: --tasks FILE (one JSON object per line) or --count N, one of them")
    run: dict[str, Any] = {"kind": args.run, "name": args.run_name, **options}
    if args.tasks is not None:
        if args.param:
            raise InvalidInput("--param goes with --count; a --tasks file gives each task's args")
        entries, lines = read_jsonl(args.tasks, "--tasks")
        if not entries:
            raise InvalidInput(f"{args.tasks} has no tasks: write one JSON object per line")
        # Checked here first so that an error names the file's line, not the entry's index.
        requests.plan_tasks(args.run, entries, where=lambda i: f"{args.tasks} line {lines[i]}", **options)
        return {"run": {**run, "tasks": entries}}
    return {"run": {**run, "count": args.count, "params": dict(_param(p) for p in args.param)}}


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidInput(f"--param takes KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def in_flags(check: Callable[[], T]) -> T:
    """``check()``, its InvalidInput naming the flag a person typed rather than the engine's field."""
    try:
        return check()
    except InvalidInput as exc:
        message = str(exc)
        for field, flag in FLAG_OF:
            if message.startswith(field + " "):
                message = flag + message[len(field):]
                break
        raise InvalidInput(message) from None


def named(name: str, read: Callable[[str], T]) -> T:
    """``read(name)``; a schedule that is not there is one line saying where to look."""
    try:
        return read(name)
    except NotFound:
        raise NotFound(f"there is no schedule named {name!r}; `tenure schedules` lists them") from None


def _change(args: argparse.Namespace, verb: str) -> Any:
    t = _open_existing(args)
    try:
        return named(args.name, getattr(t, verb))
    finally:
        t.close()


def starts(s: ScheduleView) -> str:
    """What each slot starts, in a few words."""
    if s.target == "task":
        row = s.spec.get("row", {})
        return f"one {s.kind} task, args {json.dumps(row.get('args', {}), separators=(',', ':'))}"
    what = summary.counted(int(s.spec.get("total", 0)), f"{s.kind} task")
    params = s.spec.get("params") or {}  # a simulation's; explicit tasks have none
    if params:
        what += f" ({json.dumps(params, separators=(',', ':'))})"
    return f"a run of {what}" + (f", named {s.spec['name']!r}" if s.spec.get("name") else "")


def fire_words(f: FireView) -> str:
    """How one fire went: "fired: run 12 succeeded", "skipped: ...", "missed 3 slots"."""
    made = f"run {f.run_id}" if f.run_id is not None else f"task {f.task_id}" if f.task_id is not None else ""
    words = f.outcome + (" (catch-up)" if f.catch_up else "") + (" by hand" if f.slot_at is None else "")
    if f.outcome == "missed" and f.slots > 1:
        words = f"missed {f.slots} slots"
    if made:
        words += f": {made} {f.status or ''}".rstrip()
    elif f.reason:  # the engine's reasons may begin with the outcome already ("skipped: the task of ...")
        words += f": {f.reason.removeprefix(f'{f.outcome}: ')}"
    return words


def _fired_for(f: FireView | None) -> datetime | None:
    return None if f is None else f.slot_at or f.fired_at


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _at(moment: datetime | None, s: ScheduleView, now: datetime, ahead: bool = False) -> str:
    """A stored instant in the schedule's zone ("02:00 CET"), with how far ahead it is when ``ahead``."""
    if moment is None:
        return "—"
    tz = zone(s.timezone)
    local = from_utc(moment, tz)
    text = summary.clock_time(local, from_utc(now, tz), local.tzname() or s.timezone)
    return f"{text} ({summary.starts_in(moment, now)})" if ahead else text


def _iso(moment: datetime | None, s: ScheduleView) -> str:
    return "" if moment is None else from_utc(moment.replace(microsecond=0), zone(s.timezone)).isoformat()


def _next(s: ScheduleView) -> str:
    if s.paused or s.next_slot_at is None:
        return "paused"
    return f"next fire {_at(s.next_slot_at, s, _now(), ahead=True)}"
