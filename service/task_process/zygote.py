"""The zygote: a clean, single-threaded process that forks task processes for one supervisor.

A supervisor is multi-threaded (heartbeat, web server, database pools), and forking such a
process is unsafe. So each supervisor starts this small process once (``python -m
service.task_process.zygote FD``): it imports only the task protocol and the modules that register task
kinds, never SQLAlchemy or the web stack, and forks a *host* (see :mod:`service.task_process.runner`) for
every request. Hosts share the zygote's memory pages until they write to them, which keeps
fifty task processes within a few megabytes each.

The control socket (SOCK_SEQPACKET) carries JSON messages:

* supervisor → zygote: ``hello`` (modules to import, the main script's path), ``fork`` (a host id and its
  memory limit, with the host's end of a fresh socketpair attached), ``import`` (more modules).
* zygote → supervisor: ``ready``, ``forked`` (host id, pid), ``exited`` (pid, exit code or
  signal), ``imported`` (errors).

When the supervisor dies, however it dies, the kernel closes its end of the socket: the
zygote then kills every host's process group with SIGKILL and exits, so no attempt runs on
beside the one that another supervisor reclaims. Hosts also carry ``PR_SET_PDEATHSIG``, so
they die if the zygote does.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

MAX_CONTROL_BYTES = 65536


class SupervisorGone(Exception):
    """The control socket is closed: the supervisor died or stopped."""


def _send(ctl: socket.socket, message: dict[str, Any]) -> None:
    try:
        ctl.send(json.dumps(message).encode())
    except OSError:
        raise SupervisorGone() from None


def _import(modules: list[str], main_path: str | None) -> list[str]:
    errors = []
    for name in modules:
        if name in sys.modules:
            continue
        try:
            if name == "__main__":
                if main_path:
                    import runpy

                    runpy.run_path(main_path, run_name="__tenure_main__")
                continue
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - a user's module may fail in any way; report it
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return errors


class Zygote:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.children: dict[int, int | None] = {}  # pid -> its pidfd (None where pidfds are missing)
        self.main_path: str | None = None
        self.selector = selectors.DefaultSelector()
        self.selector.register(ctl, selectors.EVENT_READ)

    def serve(self) -> None:
        try:
            while True:
                # Without pidfds (kernels before 5.3) exits are found by polling waitpid.
                timeout = None if all(fd is not None for fd in self.children.values()) else 0.1
                events = self.selector.select(timeout)
                if any(key.fileobj is self.ctl for key, _ in events) and not self._control():
                    raise SupervisorGone()
                self._reap()
        except SupervisorGone:
            self._kill_all()

    def _settle_imports(self, modules: list[str]) -> list[str]:
        errors = _import(modules, self.main_path)
        gc.collect()
        gc.freeze()  # keep the collector from touching (and so copying) shared pages in hosts
        return errors

    def _control(self) -> bool:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.ctl, MAX_CONTROL_BYTES, 4)
        except ConnectionResetError:
            return False
        if not data:
            return False  # the supervisor is gone
        message = json.loads(data)
        op = message.get("op")
        if op == "hello":
            self.main_path = message.get("main")
            if isinstance(message.get("path"), list):
                sys.path[:] = message["path"]
            _send(self.ctl, {"op": "ready", "pid": os.getpid(),
                             "errors": self._settle_imports(message.get("modules", []))})
        elif op == "import":
            _send(self.ctl, {"op": "imported", "errors": self._settle_imports(message.get("modules", []))})
        elif op == "fork":
            self._fork(message, fds[0])
        for fd in fds[1:]:
            os.close(fd)
        return True

    def _fork(self, message: dict[str, Any], fd: int) -> None:
        os.set_inheritable(fd, False)  # what the task runs (subprocesses) must not hold it open
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # the host
            try:
                self.selector.close()
                self.ctl.close()
                for pidfd in self.children.values():
                    if pidfd is not None:
                        os.close(pidfd)
                from service.task_process import runner

                # Task code yields the CPU to its supervisor: heartbeats, claims and pages stay
                # on time however hard it computes. (Not the zygote: forks stay quick under load.)
                os.nice(TASK_NICE)
                runner.main(socket.socket(fileno=fd), zygote_pid=me,
                          memory_limit_mb=message.get("memory_limit_mb"))
            finally:
                os._exit(0)
        os.close(fd)
        pidfd = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(pid)
        self.children[pid] = pidfd
        if pidfd is not None:
            self.selector.register(pidfd, selectors.EVENT_READ)
        _send(self.ctl, {"op": "forked", "host": message["host"], "pid": pid})

    def _reap(self) -> None:
        for pid in list(self.children):
            try:
                exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                exited = None
            if exited is None:
                continue
            # Still a zombie, so its process group id cannot have been reused: end whatever its
            # task started (a subprocess that ignores SIGTERM, say) before letting the pid go.
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = 0
            pidfd = self.children.pop(pid)
            if pidfd is not None:
                self.selector.unregister(pidfd)
                os.close(pidfd)
            code = os.waitstatus_to_exitcode(status)
            _send(self.ctl, {"op": "exited", "pid": pid, "code": code})

    def _kill_all(self) -> None:
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # each host leads a process group of its own
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


TASK_NICE = 5  # added to the supervisor's niceness for task processes


def main(argv: list[str]) -> None:
    """``argv[1]``: the control socket's fd. The caller has set ``sys.path`` to the supervisor's."""
    # Terminal signals are the supervisor's to handle: it stops its tasks itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = socket.socket(fileno=int(argv[1]))
    # What every task process needs, imported once here so that forks share it (not after each
    # fork: that would cost every task process the imports, pydantic's included).
    import service.task_process.kinds
    import service.task_process.runner  # noqa: F401

    Zygote(ctl).serve()


if __name__ == "__main__":
    main(sys.argv)
