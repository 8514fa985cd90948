"""The ``tenure`` command's entry point: light, so a supervisor's zygote starts before the rest imports.

``tenure worker`` and ``tenure serve`` run tasks, and the zygote that forks their task processes
needs a few hundred milliseconds of imports of its own. Launched here, before SQLAlchemy and the
web stack are imported (:mod:`service.supervisor.early`), it is ready when the first claim is.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if runs_tasks(args):
        from service.supervisor import early

        early.start_early()
    from web import cli

    return cli.main(argv)


def runs_tasks(args: list[str]) -> bool:
    """Whether the command starts a supervisor (help and a serve without a worker do not)."""
    if not args or args[0] not in ("worker", "serve") or {"-h", "--help"} & set(args):
        return False
    return not (args[0] == "serve" and "--no-worker" in args)
