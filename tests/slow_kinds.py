"""A kind whose module takes ``TENURE_TEST_SLOW_IMPORT_S`` seconds to import: a zygote importing it
keeps every task process waiting (as a heavy module, or a swapping host, would)."""

from __future__ import annotations

import os
import time
from typing import Any

from service import TaskContext, register

time.sleep(float(os.environ.get("TENURE_TEST_SLOW_IMPORT_S", "0")))  # the scenario itself, not a synchronization


class Quick:
    def __init__(self, args: dict[str, Any], ctx: TaskContext) -> None:
        self.args = args

    def run(self) -> str:
        return "ran"


register("t_slow_import")(Quick)
