"""Start the zygote first: before the supervisor's own imports, so the two start on two cores.

A supervisor needs a zygote (:mod:`service.task_process.zygote`) before it can run its first task,
and the zygote needs a few hundred milliseconds of imports (the task protocol, pydantic, the
built-in kinds). Started from the ``tenure`` command before SQLAlchemy is imported, it is ready
by the time the supervisor has claimed, instead of after. This module imports only the standard
library: the command imports it first.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
    "from service.task_process.zygote import main; main(sys.argv)"
)

_started: tuple[subprocess.Popen[bytes], socket.socket] | None = None


def launch() -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A new zygote process and the supervisor's end of its control socket (non-blocking)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process = subprocess.Popen(
        [sys.executable, "-c", _BOOT, str(theirs.fileno()), json.dumps(sys.path)],
        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
    )
    theirs.close()
    ours.setblocking(False)
    return process, ours


def start_early() -> None:
    """Launch the zygote that this process's supervisor will take (see :func:`take`). If no
    supervisor takes it, it exits with this process: its control socket closes then."""
    global _started
    if _started is None:
        _started = launch()


def start_for(args: list[str]) -> None:
    """Launch the zygote early if the command line starts a supervisor: ``worker``, or ``serve``
    without ``--no-worker`` (never for help)."""
    if not args or args[0] not in ("worker", "serve") or {"-h", "--help"} & set(args):
        return
    if not (args[0] == "serve" and "--no-worker" in args):
        start_early()


def take() -> tuple[subprocess.Popen[bytes], socket.socket] | None:
    """The zygote started early, once; None when there is none (or it died meanwhile)."""
    global _started
    started, _started = _started, None
    if started is not None and started[0].poll() is not None:
        started[1].close()
        return None
    return started
