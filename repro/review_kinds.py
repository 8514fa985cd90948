"""Task kinds the review's reproductions run (imported by the task processes by module name)."""

from __future__ import annotations

import sys
from typing import Any

from service import TaskContext, register


@register("r_loud")
class Loud:
    """Writes ``chars`` characters of output (in 100 MB pieces), then waits ``after_s`` and succeeds."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args, self.ctx = args, ctx

    def run(self) -> str:
        piece = "x" * 100_000_000
        left = int(self.args["chars"])
        while left > 0:
            sys.stdout.write(piece[:left])
            left -= len(piece)
        self.ctx.wait(self.args.get("after_s", 0.0))
        return "ok"


KEPT: list[bytearray] = []  # what r_hog leaves behind in its process (a cache, a leak)


@register("r_hog")
class Hog:
    """Keeps ``mb`` MiB alive in its process after it returns (a module-level cache), and succeeds."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args = args

    def run(self) -> str:
        block = bytearray(int(self.args["mb"]) * 2**20)
        block[::4096] = b"\1" * len(block[::4096])
        KEPT.append(block)
        return "kept"


@register("r_modest")
class Modest:
    """Allocates ``mb`` MiB for a moment (well under its memory limit), frees it, and succeeds."""

    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args = args

    def run(self) -> str:
        block = bytearray(int(self.args["mb"]) * 2**20)
        del block
        return "fine"
