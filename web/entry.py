"""The ``tenure`` command's entry point: light, so a supervisor's zygote starts before the rest imports.

``tenure worker`` and ``tenure serve`` run tasks, and the zygote that forks their task processes
needs a few hundred milliseconds of imports of its own. Launched here, before SQLAlchemy and the
web stack are imported (:mod:`service.supervisor.early`), it is ready when the first claim is.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from service.supervisor import early

    early.start_for(list(sys.argv[1:] if argv is None else argv))
    from web import cli

    return cli.main(argv)
