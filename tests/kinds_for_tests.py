"""Task kinds used only by the tests: each records what happened to it, so tests can assert."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from service import PermanentError, TaskContext, register

CALLS: Counter[str] = Counter()
RUN_RETURNED = threading.Semaphore(0)
RELEASE = threading.Event()


class Blocking:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> Any:
        CALLS["blocking"] += 1
        self.ctx.wait(self.args.get("seconds", 0.01))
        return {"out": self.args.get("value", 0) * 2}


class Polling:
    """run() returns at once; check_output() is None until ``seconds`` have passed."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx
        self.started = 0.0

    def run(self) -> None:
        CALLS["polling.run"] += 1
        self.started = time.monotonic()
        RUN_RETURNED.release()

    def check_output(self) -> Any:
        CALLS["polling.check"] += 1
        if time.monotonic() - self.started < self.args.get("seconds", 0.05):
            return None
        return self.args.get("value", 0) * 2


class Hang:
    """Never returns on its own (ignores stop requests, as badly written code does)."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        pass

    def run(self) -> None:
        CALLS["hang"] += 1
        RELEASE.wait()


class Flaky:
    """Fails ``fail_times`` times with an ordinary error, then succeeds."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        CALLS["flaky"] += 1
        if self.ctx.attempt <= self.args["fail_times"]:
            raise ConnectionError(f"attempt {self.ctx.attempt} hit a reset")
        return "ok"


class Doomed:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        pass

    def run(self) -> None:
        CALLS["doomed"] += 1
        raise PermanentError("the input can never work")


class Hook:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args = args

    def run(self) -> str:
        CALLS[f"hook:{self.args['run_id']}"] += 1
        return "hooked"


class LongSleep:
    """Cooperative long task: reports progress and stops when asked."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.ctx = ctx

    def run(self) -> str:
        CALLS["long.start"] += 1
        for i in range(1000):
            self.ctx.progress(i / 1000)
            if self.ctx.wait(0.01):
                CALLS["long.stopped"] += 1
                raise InterruptedError("stopped")
        return "done"


register("t_blocking")(Blocking)
register("t_polling")(Polling)
register("t_hang")(Hang)
register("t_flaky")(Flaky)
register("t_doomed")(Doomed)
register("t_hook")(Hook)
register("t_long")(LongSleep)


class Poison:
    """Kills the whole process every time it runs, as a segfaulting extension would."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        pass

    def run(self) -> None:
        import os

        os._exit(70)


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
    """Pure-Python busy loop for ``seconds``: it holds the interpreter as much as Python lets it."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.seconds = args.get("seconds", 1.0)

    def run(self) -> int:
        end = time.monotonic() + self.seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return n


register("t_poison")(Poison)
register("t_unprintable")(RaisesUnprintable)
register("t_flaky_check")(FlakyCheck)
register("t_cpu")(CpuHog)
