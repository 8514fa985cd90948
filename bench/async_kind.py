"""The kind bench/async_tasks.py runs: imported by its worker (``--import async_kind``) and the
worker's task processes, so it imports nothing but asyncio and the task protocol."""

from __future__ import annotations

import asyncio
from typing import Any

from service.task_process.protocol import TaskContext, register

KIND = "bench_async_sleep"


@register(KIND, description="awaits asyncio.sleep(seconds), then returns its position")
class AsyncSleep:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.seconds, self.position = float(args.get("seconds", 5.0)), ctx.position

    async def run(self) -> int:
        await asyncio.sleep(self.seconds)
        return self.position
