"""What task code writes, kept per attempt: ``logging``, ``print``, and the process's stdout/stderr.

In a task process (:mod:`service.task_process.runner`):

* ``sys.stdout`` and ``sys.stderr`` are replaced by streams that hand each write to the attempt
  whose code is running on the writing thread (the one running ``run()``, a ``check_output()``
  call, or any other thread while a ``run()`` is executing);
* a handler on the root logger does the same with each record (the root level becomes INFO
  if nothing set it lower);
* file descriptors 1 and 2 are a pipe read by a thread of their own, so what C code and
  subprocesses write is kept too (given to the ``run()`` executing at the time).

Each attempt keeps only the last :data:`TAIL_BYTES` of it, and counts what it dropped.
"""

from __future__ import annotations

import io
import logging
import os
import select
import sys
import threading
from collections.abc import Callable

from service.text import storable

TAIL_BYTES = 64 * 1024


class Tail:
    """The last :data:`TAIL_BYTES` characters written, and how many were dropped before them."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.text = ""
        self.cut = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        text = storable(text) or ""  # a NUL or a lone surrogate in output must not break a frame or a heartbeat
        with self._lock:
            self.text += text
            over = len(self.text) - self.limit
            if over > 0:
                self.text = self.text[over:]
                self.cut += over

    def take(self) -> tuple[str, int]:
        """What was written since the last take, and how much was dropped meanwhile."""
        with self._lock:
            text, cut = self.text, self.cut
            self.text, self.cut = "", 0
            return text, cut


Route = Callable[[], Tail | None]  # the tail of the attempt running on the current thread, if any


class RoutedStream(io.TextIOBase):
    """A text stream that writes to the current attempt's tail, or else to ``fallback``."""

    def __init__(self, route: Route, fallback: io.TextIOBase | None) -> None:
        self.route, self.fallback = route, fallback

    def write(self, text: str) -> int:
        tail = self.route()
        if tail is not None:
            tail.write(text)
        elif self.fallback is not None:
            self.fallback.write(text)
            self.fallback.flush()
        return len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False


class RoutedHandler(logging.Handler):
    def __init__(self, route: Route) -> None:
        super().__init__()
        self.route = route
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        tail = self.route()
        if tail is None:
            return
        try:
            tail.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is not the task's failure
            self.handleError(record)


def install(route_by_thread: Route, route_fd: Route) -> None:
    """Capture Python's streams, logging and file descriptors 1 and 2 (once, in a task process)."""
    saved_err = os.fdopen(os.dup(2), "w", buffering=1, errors="replace")
    sys.stdout = RoutedStream(route_by_thread, saved_err)  # type: ignore[assignment]
    sys.stderr = RoutedStream(route_by_thread, saved_err)  # type: ignore[assignment]
    root = logging.getLogger()
    root.addHandler(RoutedHandler(route_by_thread))
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    global _read_fd
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    _read_fd = read_end
    threading.Thread(target=_pump, args=(read_end, route_fd, saved_err), name="host-output", daemon=True).start()


_read_fd: int | None = None  # the read end of the pipe behind fds 1 and 2
_read_lock = threading.Lock()  # the pump and drain() take turns reading it


def drain(tail: Tail) -> None:
    """Move what fds 1 and 2 hold now into ``tail``: called as a run() ends, so output its
    subprocesses wrote just before is kept with it rather than left for the pump to misplace."""
    if _read_fd is None:
        return
    with _read_lock:
        while (data := _read(_read_fd)) is not None and data:
            tail.write(data.decode(errors="replace"))


def _read(fd: int) -> bytes | None:
    """What the pipe holds (b"" at its end), or None when it holds nothing now."""
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def _pump(fd: int, route: Route, fallback: io.TextIOBase) -> None:
    while True:
        select.select([fd], [], [])
        with _read_lock:
            data = _read(fd)
            if data is None:
                continue  # drain() took it
            if not data:
                return
            text = data.decode(errors="replace")
            tail = route()
            if tail is not None:
                tail.write(text)
            else:
                fallback.write(text)
                fallback.flush()
