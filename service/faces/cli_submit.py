"""``tenure submit``: a run of a simulation or of the tasks of a JSON-lines file, or one task
(``--args`` or ``--unique``), now or later, placed in a queue.

``--at`` (RFC 3339 with its offset) or ``--in`` (a duration, like 90s or 2h) holds the work
back until then; ``--queue``, ``--priority``, ``--key`` and ``--key-limit`` place it (see
:mod:`service.faces.flow`). The reading of a tasks file is shared with ``tenure schedule add``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from service.config import parse_duration, parse_memory
from service.errors import InvalidInput
from service.faces import client, summary
from service.faces import plans as requests
from service.faces.cli import db_url
from service.faces.flow import FlowOptions, plan_flow, with_flow

# The engine names a submission's fields; a person typed these flags.
T = TypeVar("T")
FLAG_OF = (("key_limit", "--key-limit"), ("unique_key", "--unique"), ("priority", "--priority"),
           ("queue", "--queue"), ("key", "--key"), ("label", "--name"))


def add_submit(sub: Any, db: argparse.ArgumentParser) -> None:
    p = sub.add_parser("submit", parents=[db], help="create a run; prints its id last")
    p.add_argument("--tasks", type=int, help="number of tasks of a simulation (default 50)")
    p.add_argument("--tasks-file", metavar="FILE",
                   help="the run's tasks, one JSON object per line (its args, or {\"args\": ..., \"label\": ...}); "
                        "- reads standard input")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="submitting again with the same key returns the same run instead of a second one")
    p.add_argument("--kind", default="sleep", help="task kind (default sleep)")
    p.add_argument("--min-seconds", type=float, help="sleep: shortest task (default 30)")
    p.add_argument("--max-seconds", type=float, help="sleep: longest task (default 120)")
    p.add_argument("--failure-rate", type=float, help="sleep: share of tasks that fail for good (default 0.1)")
    p.add_argument("--transient-rate", type=float, help="sleep: share that fail once, then succeed (default 0.1)")
    p.add_argument("--time-scale", type=float, help="gen_task: multiply its 1-99 s durations (default 1)")
    p.add_argument("--shape", choices=["blocking", "polling", "random"], help="gen_task: which fake (default random)")
    p.add_argument("--seed", type=int, help="makes durations and failures repeatable (default: random)")
    p.add_argument("--name", help="a label for the run (or for the one task of --args)")
    p.add_argument("--max-attempts", type=int, default=3, help="attempts per task (default 3)")
    p.add_argument("--timeout", type=float, help="seconds one attempt may run (default: the worker's)")
    p.add_argument("--memory-limit", help="memory limit of each task's process, like 512M or 2G "
                                          "(default: the worker's --memory-limit)")
    p.add_argument("--on-complete", help="a kind to run once when the run completes")
    p.add_argument("--at", metavar="TIME",
                   help="start no earlier than TIME, RFC 3339 with its offset: 2026-12-04T02:00:00+01:00 or ...Z")
    p.add_argument("--in", "--delay", dest="delay", metavar="DURATION",
                   help="start after DURATION, like 90s, 5m or 2h (at most a year)")
    p.add_argument("--args", metavar="JSON",
                   help="submit one task of --kind with these args (a JSON object), outside any run")
    flow = p.add_argument_group("flow control")
    flow.add_argument("--queue", metavar="NAME", help="the queue its tasks wait in (default: the kind's, else default)")
    flow.add_argument("--priority", type=int, metavar="N",
                      help="higher starts first within its queue, from -1000 to 1000 (default: the kind's, else 0)")
    flow.add_argument("--key", metavar="KEY", help="a concurrency key its tasks count against")
    flow.add_argument("--key-limit", type=int, metavar="N",
                      help="with --key: at most N tasks with that key run at once, on every host")
    flow.add_argument("--unique", metavar="KEY",
                      help="one task (args from --args, else {}): while a task with this unique key is queued, "
                           "retrying or running, none is created and that task's id is printed instead")
    p.set_defaults(command="submit", handler=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    memory = parse_memory(args.memory_limit) if args.memory_limit is not None else None
    flow = in_flags(lambda: plan_flow(args.queue, args.priority, args.key, args.key_limit, args.unique))
    if args.args is not None or args.unique is not None:
        return _submit_task(args, flow, memory)
    request = {"name": args.name, "max_attempts": args.max_attempts, "timeout_s": args.timeout,
               "memory_limit_mb": memory, "on_complete": args.on_complete}
    # Check everything before the database is opened, so bad input writes nothing at all.
    if args.tasks_file is not None:
        if args.tasks is not None or _simulation_flags(args):
            raise InvalidInput("--tasks-file gives the run's tasks; --tasks and the simulation flags do not go with it")
        entries, lines = read_jsonl(args.tasks_file)
        if not entries:
            raise InvalidInput(f"{args.tasks_file} has no tasks: write one JSON object per line")
        plan = requests.plan_tasks(args.kind, entries, where=lambda i: f"{args.tasks_file} line {lines[i]}",
                                   **request)
    else:
        plan = client.plan_run(50 if args.tasks is None else args.tasks, args.kind, _simulation_flags(args), **request)
    plan = with_flow(later(plan, args.at, args.delay), flow)
    t = client.open(db_url(args))
    try:
        created = t.start_run(plan, args.idempotency_key)
        run = t.run(created.id) if plan.start is not None else None
    finally:
        t.close()
    already = "" if created.new else " (made earlier with this idempotency key)"
    when = ""
    if run is not None and run.scheduled_for is not None:
        when = f", {summary.scheduled_for(run.scheduled_for, datetime.now(UTC).replace(tzinfo=None))}"
    queue = _in_queue(plan.placement.queue if plan.placement is not None else "default")
    print(f"submitted run {created.id}: {summary.counted(plan.total, f'{args.kind} task')}{queue}{when}{already}")
    print(created.id)
    return 0


def _submit_task(args: argparse.Namespace, flow: FlowOptions, memory: int | None) -> int:
    """One task outside any run; with ``--unique``, the task that holds the key if one does."""
    run_only = [flag for flag, given in (("--tasks", args.tasks), ("--tasks-file", args.tasks_file),
                                         ("--on-complete", args.on_complete)) if given is not None]
    run_only += ["--" + flag.replace("_", "-") for flag in _simulation_flags(args)]
    if run_only:
        raise InvalidInput(f"{run_only[0]} goes with a run; one task (--args or --unique) takes its args as "
                           "--args JSON")
    try:
        task_args = json.loads(args.args) if args.args is not None else {}
    except ValueError as exc:
        raise InvalidInput(f"--args is not JSON: {exc}") from None
    plan = in_flags(lambda: requests.plan_task(args.kind, task_args, label=args.name, max_attempts=args.max_attempts,
                                               timeout_s=args.timeout, memory_limit_mb=memory))
    plan = with_flow(later(plan, args.at, args.delay), flow)
    t = client.open(db_url(args))
    try:
        created = t.start_task(plan, args.idempotency_key)
        task = t.task(created.id)
    finally:
        t.close()
    if created.unique:
        state = "active" if task.terminal else task.status  # it held the key at the submit; it may have ended since
        print(f"task {created.id} with unique key {args.unique!r} is already {state}; not submitted again")
    else:
        when = ""
        if task.scheduled_for is not None:
            when = f", {summary.scheduled_for(task.scheduled_for, datetime.now(UTC).replace(tzinfo=None))}"
        already = "" if created.new else " (made earlier with this idempotency key)"
        print(f"submitted task {created.id}: one {args.kind} task{_in_queue(task.queue)}{when}{already}")
    print(created.id)
    return 0


def _in_queue(queue: str) -> str:
    return "" if queue == "default" else f" in queue {queue}"


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


def later(plan: requests.P, at: str | None, delay: str | None) -> requests.P:
    """``plan`` held back until ``--at`` or for ``--in`` (None, None: it starts at once).

    Raises:
        InvalidInput: a time that is not RFC 3339 or has no offset, a duration that is not one, or
            a start more than a year away; in the flags' words.
    """
    start_at = requests.parse_time(at, "--at") if at is not None else None
    delay_s = parse_duration(delay, "--in") if delay is not None else None
    if delay_s is not None and delay_s > requests.MAX_START_AHEAD.total_seconds():
        raise InvalidInput(f"--in {delay} is more than a year; the furthest start is "
                           f"{requests.MAX_START_AHEAD.days} days ahead")
    try:
        return requests.with_start(plan, start_at, delay_s)
    except InvalidInput as exc:  # the engine names its parameters; a person typed flags
        raise InvalidInput(str(exc).replace("start_at", "--at").replace("delay_s", "--in")) from None


def _simulation_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = ("min_seconds", "max_seconds", "failure_rate", "transient_rate", "time_scale", "seed", "shape")
    return {flag: getattr(args, flag) for flag in flags if getattr(args, flag, None) is not None}


def read_jsonl(path: str, flag: str = "--tasks-file") -> tuple[list[Any], list[int]]:
    """The JSON objects of a JSON-lines file (``-``: standard input) and the line each is on.

    Raises:
        InvalidInput: the file cannot be read, or a line is not JSON (naming it).
    """
    try:
        handle = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {flag} {path}: {exc.strerror}") from None
    entries, lines = [], []
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    entries.append(json.loads(line))
                except ValueError as exc:
                    raise InvalidInput(f"{path} line {number} is not JSON: {exc}") from None
                lines.append(number)
        except UnicodeDecodeError:
            raise InvalidInput(f"{path} is not UTF-8 text") from None
    return entries, lines
