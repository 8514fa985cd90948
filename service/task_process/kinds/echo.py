"""``echo``: returns its args at once. Handy as a completion hook and in examples."""

from __future__ import annotations

from typing import Any

from service.task_process.protocol import TaskContext, register


class Echo:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args

    def run(self) -> dict[str, Any]:
        return {"echo": self.args}


@register("echo", description="returns its arguments at once")
def build(args: dict[str, Any], ctx: TaskContext) -> Echo:
    return Echo(args)
