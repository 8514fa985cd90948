"""Task kinds used only by the tests.

Task code runs in the supervisor's task processes, not in the test's, so a kind that the test
must observe writes to a *journal*: a file named by ``args["journal"]``, one line per event
(``event task attempt pid``), appended atomically. :func:`journal` reads it back.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from service import PermanentError, TaskContext, register


def note(args: dict[str, Any], ctx: TaskContext, event: str) -> None:
    path = args.get("journal")
    if path:
        line = f"{event} {ctx.task_id} {ctx.attempt} {os.getpid()}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def journal(path: Path | str) -> list[tuple[str, int, int, int]]:
    """Every (event, task id, attempt, pid) the kinds noted in the file, in order."""
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    for line in p.read_text().splitlines():
        event, task, attempt, pid = line.split()
        rows.append((event, int(task), int(attempt), int(pid)))
    return rows


def events(path: Path | str, event: str) -> list[tuple[str, int, int, int]]:
    return [row for row in journal(path) if row[0] == event]


class Blocking:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> Any:
        note(self.args, self.ctx, "blocking")
        self.ctx.wait(self.args.get("seconds", 0.01))
        return {"out": self.args.get("value", 0) * 2}


class Polling:
    """run() returns at once; check_output() is None until ``seconds`` have passed."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx
        self.started = 0.0
        if "interval" in args:
            self.poll_interval_s = args["interval"]  # a pace of its own, as the protocol allows

    def run(self) -> None:
        note(self.args, self.ctx, "polling.run")
        self.started = time.monotonic()

    def check_output(self) -> Any:
        note(self.args, self.ctx, "polling.check")
        if time.monotonic() - self.started < self.args.get("seconds", 0.05):
            return None
        return self.args.get("value", 0) * 2


class Hang:
    """Blocked in a sleep that ignores stop requests, as badly written code is."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> None:
        note(self.args, self.ctx, "hang")
        time.sleep(10**6)


class Stubborn:
    """Ignores SIGTERM, then blocks: only SIGKILL ends it."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        note(self.args, self.ctx, "stubborn")
        time.sleep(10**6)


class Spin:
    """A pure-Python endless loop."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> None:
        note(self.args, self.ctx, "spin")
        n = 0
        while True:
            n += 1


class Regex:
    """A catastrophic regular expression: C code that never releases the GIL."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> Any:
        note(self.args, self.ctx, "regex")
        return bool(re.match(r"(a+)+$", "a" * self.args.get("n", 64) + "b"))


class GilHog:
    """Holds the GIL in C code for ``seconds`` (libc's sleep called through ctypes.PyDLL)."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        note(self.args, self.ctx, "gil")
        ctypes.PyDLL(None).sleep(int(self.args.get("seconds", 1)))
        return "held"


class Flaky:
    """Fails ``fail_times`` times with an ordinary error, then succeeds."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        if self.ctx.attempt <= self.args["fail_times"]:
            raise ConnectionError(f"attempt {self.ctx.attempt} hit a reset")
        return "ok"


class Doomed:
    """Fails at once, for good: "the input can never work", or ``args["message"]``."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.message = args.get("message", "the input can never work")

    def run(self) -> None:
        raise PermanentError(self.message)


class Hook:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        note(self.args, self.ctx, f"hook:{self.args['run_id']}")
        return "hooked"


class LongSleep:
    """Cooperative long task: reports progress and checkpoints, and stops when asked."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        note(self.args, self.ctx, "long.start")
        start = self.ctx.saved["i"] if isinstance(self.ctx.saved, dict) else 0
        for i in range(start, self.args.get("steps", 1000)):
            self.ctx.progress(i / self.args.get("steps", 1000))
            self.ctx.checkpoint({"i": i})
            if self.ctx.wait(self.args.get("step_s", 0.01)):
                note(self.args, self.ctx, "long.stopped")
                raise InterruptedError("stopped")
        return "done"


class Poison:
    """Ends its own process every time it runs, as a crashing extension would."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> None:
        note(self.args, self.ctx, "poison")
        how = self.args.get("how", "exit")
        if how == "exit":
            os._exit(self.args.get("code", 70))
        elif how == "segv":
            ctypes.string_at(0)
        elif how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "memory":
            hoard = []
            while True:
                hoard.append(bytearray(8 * 1024 * 1024))


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no printing me")

    def __repr__(self) -> str:
        raise RuntimeError("nor me")


class RaisesUnprintable:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        pass

    def run(self) -> None:
        raise Unprintable()


class FlakyCheck:
    """A polling task whose check_output() raises every other call, then answers."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.calls = 0

    def run(self) -> None:
        return None

    def check_output(self) -> Any:
        self.calls += 1
        if self.calls % 2:
            raise OSError(f"status endpoint hiccup #{self.calls}")
        return "ok" if self.calls >= 6 else None


class CpuHog:
    """Pure-Python busy loop for ``seconds``."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.seconds = args.get("seconds", 1.0)

    def run(self) -> int:
        end = time.monotonic() + self.seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return n


class NotJson:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        pass

    def run(self) -> object:
        return {"when": object()}


class Pid:
    """Returns the pid of the process it ran in, and the supervisor's (its parent's parent)."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> dict[str, int]:
        note(self.args, self.ctx, "pid")
        self.ctx.wait(self.args.get("seconds", 0.0))
        return {"pid": os.getpid()}


class Spawner:
    """Starts a child that outlives nothing: ``how`` exit (then _exit 70), timeout (then hangs)."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> None:
        import subprocess

        # close_fds=False: the child inherits every inheritable descriptor, as careless code does.
        child = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 30"], close_fds=False)
        note(self.args, self.ctx, f"child:{child.pid}")
        if self.args.get("how") == "exit":
            os._exit(70)
        time.sleep(10**6)


class ZygoteKiller:
    """On its first attempt, kills the process that forked its own (its parent); then succeeds."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        note(self.args, self.ctx, "zkill")
        if self.ctx.attempt == 1:
            time.sleep(self.args.get("after_s", 0.2))
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(10)
        return "survived"


class SlowCheck:
    """A polling task whose check_output() holds the GIL in C for ``hold_s`` every time."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx
        self.checks = 0

    def run(self) -> None:
        note(self.args, self.ctx, "slowcheck.run")

    def check_output(self) -> Any:
        self.checks += 1
        note(self.args, self.ctx, "slowcheck.check")
        ctypes.PyDLL(None).sleep(int(self.args.get("hold_s", 2)))
        return "checked" if self.checks >= self.args.get("checks", 2) else None


class BigCheckpoint:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.ctx = ctx

    def run(self) -> None:
        self.ctx.checkpoint({"blob": "x" * (2 * 1024 * 1024)})


class Chatty:
    """Writes through print, logging, stderr, and a subprocess; fails if asked to."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        import logging
        import subprocess
        import sys

        print("hello from print")
        logging.getLogger("chatty").info("hello from logging, attempt %s", self.ctx.attempt)
        sys.stderr.write("hello from stderr\n")
        subprocess.run(["echo", "hello from a subprocess"], check=True)
        for i in range(self.args.get("lines", 0)):
            print(f"line {i:06d} " + "x" * 90)
        self.ctx.wait(self.args.get("seconds", 0.0))
        if self.args.get("fail"):
            raise ValueError("the chatty task failed on purpose")
        return "chatted"


class Mixed:
    """Task ``poison_at`` of a run kills its process (``how``), tasks ``hog_at`` hold the GIL for
    ``hog_s``; every other one sleeps ``seconds`` and succeeds."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> dict[str, int]:
        if self.ctx.position == self.args.get("poison_at"):
            Poison(self.args, self.ctx).run()
        if self.ctx.position in self.args.get("hog_at", ()):
            GilHog({**self.args, "seconds": self.args.get("hog_s", 1)}, self.ctx).run()
            return {"position": self.ctx.position}
        note(self.args, self.ctx, "mixed")
        self.ctx.wait(self.args.get("seconds", 0.5))
        return {"position": self.ctx.position}


class Nice:
    """Returns the niceness its process runs at."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        pass

    def run(self) -> int:
        return os.nice(0)


class AsyncSleep:
    """``async def run()``: awaits ``seconds`` in ``steps``, reporting progress and a checkpoint;
    fails if asked to; notes its cancellation (from its ``finally``)."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    async def run(self) -> Any:
        import asyncio

        note(self.args, self.ctx, "async.start")
        steps = self.args.get("steps", 1)
        finished = False
        try:
            for i in range(steps):
                await asyncio.sleep(self.args.get("seconds", 0.01) / steps)
                self.ctx.progress((i + 1) / steps)
                self.ctx.checkpoint({"i": i + 1})
            if self.args.get("fail"):
                raise ValueError("the async task failed on purpose")
            print("hello from an async task")
            finished = True
            return {"out": self.args.get("value", 0) * 2, "pid": os.getpid()}
        finally:
            if not finished:
                note(self.args, self.ctx, "async.ended")


class AsyncBlock:
    """``async def run()`` that blocks its event loop in ``time.sleep``, as careless async code does."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    async def run(self) -> str:
        note(self.args, self.ctx, "async.block")
        time.sleep(self.args.get("seconds", 30))
        return "unblocked"


class AsyncPolling:
    """``async def run()`` that starts and returns None; ``async def check_output()`` answers after ``seconds``."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx
        self.started = 0.0

    async def run(self) -> None:
        note(self.args, self.ctx, "apoll.run")
        self.started = time.monotonic()

    async def check_output(self) -> Any:
        note(self.args, self.ctx, "apoll.check")
        if time.monotonic() - self.started < self.args.get("seconds", 0.05):
            return None
        return self.args.get("value", 0) * 2


def shape_shifter(args: dict[str, Any], ctx: TaskContext) -> Any:
    """One kind, two shapes: async when ``args["async"]``, else blocking."""
    return AsyncSleep(args, ctx) if args.get("async") else Blocking(args, ctx)


register("t_shape_shifter")(shape_shifter)


def two_faced(args: dict[str, Any], ctx: TaskContext) -> Any:
    """One kind that parks (a polling task) unless ``args["poison"]`` says how to kill its process,
    or ``args["hang"]`` asks it to hang in run()."""
    if args.get("poison"):
        return Poison({**args, "how": args["poison"]}, ctx)
    return Hang(args, ctx) if args.get("hang") else Polling(args, ctx)


class Saboteur:
    """Returns at once, but leaves behind what kills its process ``after_s`` later (``how``: a thread,
    a child process that signals its parent, or an alarm)."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        import threading

        note(self.args, self.ctx, "saboteur")
        after, how = self.args.get("after_s", 0.3), self.args.get("how", "thread")
        if how == "thread":
            threading.Timer(after, os.kill, (os.getpid(), signal.SIGKILL)).start()
        elif how == "child":
            parent = os.getpid()
            if os.fork() == 0:
                time.sleep(after)
                os.kill(parent, signal.SIGKILL)
                os._exit(0)
        elif how == "alarm":
            signal.setitimer(signal.ITIMER_REAL, after)  # SIGALRM's default action ends the process
        return "left something behind"


class Says:
    """Prints ``print`` every ``every_s`` for ``seconds``, then raises ``error`` (permanently) or returns
    ``value``: text of any kind from task code, NUL bytes ("NUL" in the args) and lone surrogates
    ("LONE") included (a person cannot submit those: they would be refused)."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> Any:
        import sys

        note(self.args, self.ctx, "says")
        stop = time.monotonic() + self.args.get("seconds", 0.0)
        while True:
            if "print" in self.args:
                print(_raw(self.args["print"]), flush=True)
                sys.stdout.write(_raw(self.args["print"]) + "\n")
            if time.monotonic() >= stop or self.ctx.wait(self.args.get("every_s", 0.05)):
                break
        if "error" in self.args:
            raise PermanentError(_raw(self.args["error"]))
        value = self.args.get("value", "said")
        return _raw(value) if isinstance(value, str) else value


def _raw(text: str) -> str:
    return text.replace("NUL", "\x00").replace("LONE", "\udc80")


KEPT: list[bytearray] = []  # what t_hog leaves behind in its process (a cache, a leak)


class Hog:
    """Keeps ``mb`` MiB alive in its process after it returns (a module-level cache), and succeeds."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        note(self.args, self.ctx, "hog")
        block = bytearray(int(self.args["mb"]) * 2**20)
        block[::4096] = b"\1" * len(block[::4096])
        KEPT.append(block)
        return "kept"


class Modest:
    """Allocates ``mb`` MiB for a moment (well under its memory limit), frees it, and succeeds."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        note(self.args, self.ctx, "modest")
        block = bytearray(int(self.args["mb"]) * 2**20)
        del block
        return "fine"


CORRUPTED = {"process": False}  # what a task that corrupts its process's state leaves, unseen from outside


class Corrupter:
    """Corrupts its process's state (as a C library left in a bad state would) and returns at once."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        note(self.args, self.ctx, "corrupter")
        CORRUPTED["process"] = True
        return "corrupted"


class Victim:
    """A healthy task that dies if an earlier occupant of its process corrupted it."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> int:
        note(self.args, self.ctx, "victim")
        if CORRUPTED["process"]:
            os._exit(71)
        return os.getpid()


register("t_two_faced")(two_faced)

for _name, _cls in {
    "t_blocking": Blocking, "t_polling": Polling, "t_hang": Hang, "t_spin": Spin, "t_regex": Regex,
    "t_gil": GilHog, "t_flaky": Flaky, "t_doomed": Doomed, "t_hook": Hook, "t_long": LongSleep,
    "t_poison": Poison, "t_unprintable": RaisesUnprintable, "t_flaky_check": FlakyCheck,
    "t_cpu": CpuHog, "t_not_json": NotJson, "t_pid": Pid, "t_mixed": Mixed, "t_spawner": Spawner,
    "t_zygote_killer": ZygoteKiller, "t_slow_check": SlowCheck, "t_big_checkpoint": BigCheckpoint,
    "t_chatty": Chatty, "t_nice": Nice, "t_async": AsyncSleep, "t_async_block": AsyncBlock,
    "t_async_poll": AsyncPolling, "t_saboteur": Saboteur, "t_corrupter": Corrupter, "t_victim": Victim,
    "t_says": Says, "t_stubborn": Stubborn, "t_hog": Hog, "t_modest": Modest,
}.items():
    register(_name)(_cls)
