"""A host: a process forked by the zygote that runs task code for its supervisor.

Task code never runs in the supervisor's process. A host runs at most one ``run()`` call at a
time, on its main thread (so code that installs signal handlers works); ``check_output()``
calls of the polling tasks it hosts run on short-lived threads. A polling task's object stays
here between checks, holding no thread, while the host goes on running other tasks' calls.

Whatever a task does to its process (``os._exit``, a segfault, a signal, running out of its
memory limit, hanging in C code that holds the GIL) ends at most this host: the supervisor
sees the host die and knows exactly which tasks were in it.

The host never touches the database. Progress and checkpoints travel to the supervisor as
messages (coalesced every :data:`FLUSH_S`), and the supervisor's heartbeat writes them.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import queue
import resource
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, NoReturn

from service.errors import InvalidInput, PermanentError, describe
from service.task_process import capture, leftovers, protocol, wire
from service.task_process.event_loop import AsyncSide, current, is_async
from service.text import storable

FLUSH_S = 0.1  # progress and checkpoints reach the supervisor at most this late
MAX_TRACEBACK_CHARS = 16_000
PR_SET_PDEATHSIG = 1


@dataclass
class Occupant:
    """One attempt hosted here: running its ``run()``, or a polling task between checks."""

    key: tuple[int, int]
    ctx: protocol.TaskContext
    task: Any = None
    sent_version: int = 0
    checking: bool = False
    on_loop: bool = False  # an async task: its code runs on the host's event loop
    fatal_frame: bytes = field(default=b"")
    leftovers: str | None = None  # what its run() left running in the process (see leftovers.py)
    tail: capture.Tail = field(default_factory=capture.Tail)  # what it wrote since the last send


class Runner:
    def __init__(self, sock: socket.socket, memory_limit_mb: int | None) -> None:
        self.sock = sock
        self.memory_limit_mb = memory_limit_mb
        self.send_lock = threading.Lock()
        self.occupants: dict[tuple[int, int], Occupant] = {}
        self.lock = threading.Lock()
        self.calls: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.occupied = threading.Event()  # set while any task is hosted here
        self.running: Occupant | None = None  # whose run() is executing on the main thread
        self.on_thread: dict[int, Occupant] = {}  # thread ident -> whose code it is running
        self.aio = AsyncSide(self)

    def tail_of_thread(self) -> capture.Tail | None:
        """Where output written on this thread belongs: its attempt, else the run() executing."""
        occupant = current.get() or self.on_thread.get(threading.get_ident()) or self.running
        return occupant.tail if occupant is not None else None

    def tail_of_run(self) -> capture.Tail | None:
        occupant = self.running
        return occupant.tail if occupant is not None else None

    # -- the supervisor's side ------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        frame = wire.encode(message)
        self.send_frame(frame)

    def send_frame(self, frame: bytes) -> None:
        with self.send_lock:
            self._send_locked(frame)

    def _send_locked(self, frame: bytes) -> None:
        try:
            self.sock.sendall(frame)
        except OSError:
            os._exit(0)  # the supervisor is gone: nothing of ours may run on

    def read_loop(self) -> None:
        """Takes the supervisor's messages; its closing the socket ends this process."""
        reader = wire.Reader()
        try:
            while data := self.sock.recv(1 << 20):  # a burst of messages in one read
                for message in reader.feed(data):
                    self.handle(message)
        except (OSError, wire.ProtocolError):
            pass
        os._exit(0)

    def handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "run":
            if message.get("async"):  # an async kind's: straight to the loop, past any run() executing
                self.aio.start(self.admit(message), message)
            else:
                self.calls.put(message)
            return
        if op == "exit":
            os._exit(0)
        key = _key(message.get("key"))
        with self.lock:
            occupant = self.occupants.get(key)
        if occupant is None:
            return
        if op == "stop":
            occupant.ctx.stop_event.set()
        elif op == "drop":
            occupant.ctx.stop_event.set()
            with self.lock:
                self.occupants.pop(key, None)
            if occupant.on_loop:
                self.aio.cancel(occupant)
        elif op == "check" and not occupant.checking and occupant.on_loop and is_async(occupant.task.check_output):
            occupant.checking = True
            self.aio.check(occupant)
        elif op == "check" and not occupant.checking:
            thread = threading.Thread(target=self.check, args=(occupant,), name=f"check-{key[0]}-{key[1]}",
                                      daemon=True)
            try:
                occupant.checking = True
                thread.start()
            except BaseException as exc:  # noqa: BLE001 - no thread (memory, limits): report, check later
                occupant.checking = False
                self.report(occupant, "checked", error=exc, keep=True)

    def flush_loop(self) -> None:
        tick = threading.Event()
        while True:
            self.occupied.wait()  # an idle host wakes for nothing
            tick.wait(FLUSH_S)
            watching = self.aio.watch()
            with self.lock:
                occupants = list(self.occupants.values())
                if not self.occupants and not watching:
                    self.occupied.clear()
            for occupant in occupants:
                if occupant.ctx.version == occupant.sent_version and not occupant.tail.text and not occupant.tail.cut:
                    continue  # nothing new (read without locks: a change missed now is sent next time)
                try:
                    with self.send_lock:
                        self.flush(occupant, send=True)
                except Exception as exc:  # noqa: BLE001 - the flusher must outlive any one bad value
                    print(f"tenure host: progress of task {occupant.key[0]} not sent: {describe(exc)}",
                          file=sys.__stderr__)

    def flush(self, occupant: Occupant, *, send: bool) -> dict[str, Any]:
        """The occupant's progress, checkpoint and new output, sent as a progress frame (``send``)
        when any changed, or returned for the caller's own frame.

        Called holding ``send_lock``, so a later state never reaches the supervisor first.
        """
        version, progress, saved = occupant.ctx.snapshot()
        text, cut = occupant.tail.take()
        state: dict[str, Any] = {"v": version, "progress": progress, "checkpoint": saved}
        if text or cut:
            state.update(log=text, log_cut=cut)
        if send and (version != occupant.sent_version or text or cut):
            self._send_locked(wire.encode({"op": "progress", "key": list(occupant.key), **state}))
        occupant.sent_version = version
        return state

    # -- running task code ----------------------------------------------------------------

    def serve(self) -> NoReturn:
        threading.Thread(target=self.read_loop, name="host-reader", daemon=True).start()
        threading.Thread(target=self.flush_loop, name="host-flusher", daemon=True).start()
        self.send({"op": "hello", "pid": os.getpid()})
        while True:
            self.run(self.calls.get())

    def admit(self, message: dict[str, Any]) -> Occupant:
        """The attempt a ``run`` message brings, registered as hosted here."""
        key = _key(message["key"])
        info = message.get("ctx") or {}
        ctx = protocol.TaskContext(task_id=key[0], attempt=key[1], run_id=info.get("run_id"),
                                   position=info.get("position", 0), saved=info.get("saved"))
        occupant = Occupant(key=key, ctx=ctx)
        body = b'{"op":"fatal","key":[%d,%d],"reason":"memory"}' % key  # ready before memory runs out
        occupant.fatal_frame = wire.HEADER.pack(len(body)) + body
        with self.lock:
            self.occupants[key] = occupant
        if not self.occupied.is_set():
            self.occupied.set()
        return occupant

    def build(self, occupant: Occupant, message: dict[str, Any]) -> Any:
        kind = resolve_kind(message["kind"], message.get("module"), message.get("main"))
        return kind.build(dict(message.get("args") or {}), occupant.ctx)

    def run(self, message: dict[str, Any]) -> None:
        occupant = self.admit(message)
        self.running = occupant
        try:
            occupant.task = self.build(occupant, message)
            if is_async(getattr(occupant.task, "run", None)):
                # Its run() goes to the loop; this thread takes the next one. The pool learns the kind's shape.
                self.running = None
                self.send({"op": "began", "key": list(occupant.key), "async": True})
                self.aio.start(occupant, None)
                return
            self.send({"op": "began", "key": list(occupant.key), "async": False})
            before = leftovers.baseline()
            try:
                value = occupant.task.run()
            finally:
                occupant.leftovers = leftovers.since(before)
        except BaseException as exc:  # noqa: BLE001 - task code may raise anything; all are reported
            capture.drain(occupant.tail)
            self.running = None
            self.failed(occupant, "ran", exc)
            return
        capture.drain(occupant.tail)  # what its subprocesses wrote and the pump has not read yet
        self.running = None
        self.ran(occupant, value)

    def decline(self, occupant: Occupant) -> None:
        """Sent here as async, its run() is not: the pool places it again, as a blocking task."""
        with self.lock:
            self.occupants.pop(occupant.key, None)
        self.send({"op": "began", "key": list(occupant.key), "async": False})

    def failed(self, occupant: Occupant, op: str, exc: BaseException, *, keep: bool = False) -> None:
        if _caused_by_memory(exc):
            self.out_of_memory(occupant)
        self.report(occupant, op, error=exc, keep=keep)

    def ran(self, occupant: Occupant, value: Any) -> None:
        """Its run() returned ``value``: the output, or (None, with check_output()) a polling task."""
        key = occupant.key
        if value is None and callable(getattr(occupant.task, "check_output", None)):
            # A polling task: its object stays here between checks, holding no thread.
            parked: dict[str, Any] = {"op": "ran", "key": list(key), "polling": True}
            if occupant.leftovers:
                parked["leftovers"] = occupant.leftovers
            if occupant.on_loop and not is_async(occupant.task.check_output):
                occupant.on_loop = False  # its checks run on threads, which only ending the host can stop
                parked["threads"] = True
            asked = getattr(occupant.task, "poll_interval_s", None)
            if isinstance(asked, (int, float)) and not isinstance(asked, bool) and 0 < asked < 86_400:
                parked["poll_interval_s"] = float(asked)
            with self.send_lock:
                parked.update(self.flush(occupant, send=False))
                self._send_locked(wire.encode(parked))
            return
        self.report(occupant, "ran", value=value)

    def check(self, occupant: Occupant) -> None:
        self.on_thread[threading.get_ident()] = occupant
        try:
            self._check(occupant)
        finally:
            self.on_thread.pop(threading.get_ident(), None)

    def _check(self, occupant: Occupant) -> None:
        try:
            value = occupant.task.check_output()
        except BaseException as exc:  # noqa: BLE001
            occupant.checking = False
            self.failed(occupant, "checked", exc, keep=True)
            return
        occupant.checking = False
        self.report(occupant, "checked", value=value, keep=value is None)

    def report(self, occupant: Occupant, op: str, *, value: Any = None, error: BaseException | None = None,
               keep: bool = False) -> None:
        """Send the call's outcome; the occupant leaves unless it is a polling task still waiting."""
        if not keep:
            with self.lock:
                self.occupants.pop(occupant.key, None)
        with self.send_lock:
            message: dict[str, Any] = {"op": op, "key": list(occupant.key), **self.flush(occupant, send=False)}
            if op == "ran" and occupant.leftovers:
                message["leftovers"] = occupant.leftovers
            if error is not None:
                message["error"] = encode_error(error)
            else:
                message["value"] = value
            try:
                frame = wire.encode(message)
            except wire.FrameTooLarge as exc:
                message.pop("value", None)
                message["error"] = {"message": f"the task's output is too large to store: {exc}",
                                    "permanent": True, "traceback": None}
                frame = wire.encode(message)
            except (TypeError, ValueError, RecursionError) as exc:  # not JSON, or text that is not valid Unicode
                message.pop("value", None)
                why = storable(describe(exc))
                message["error"] = {"message": f"the task's output cannot be stored as JSON ({why})",
                                    "permanent": True, "traceback": None}
                frame = wire.encode(message)
            self._send_locked(frame)

    def out_of_memory(self, occupant: Occupant) -> NoReturn:
        """Tell the supervisor which task ran out of memory, then end: the process may be unsound."""
        with contextlib.suppress(BaseException):
            self.send_frame(occupant.fatal_frame)
        os._exit(wire.MEMORY_EXIT_CODE)


def encode_error(exc: BaseException) -> dict[str, Any]:
    try:
        tb = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK_CHARS:]
    except BaseException:  # noqa: BLE001 - a traceback that cannot be formatted is left out
        tb = None
    # Made storable here, where it leaves task code: a NUL or a lone surrogate in an exception's
    # text must fail nothing but this attempt (see service.text).
    return {"message": storable(describe(exc)), "permanent": isinstance(exc, (PermanentError, InvalidInput)),
            "traceback": storable(tb)}


def resolve_kind(name: str, module: str | None, main_path: str | None) -> protocol.Kind:
    """The kind ``name``, importing the module that registers it if this process lacks it.

    Raises:
        InvalidInput: no importable module registers it.
    """
    try:
        return protocol.get_kind(name)
    except InvalidInput:
        pass
    if module == "__main__" and main_path:
        import runpy

        runpy.run_path(main_path, run_name="__tenure_main__")
    elif module:
        importlib.import_module(module)
    try:
        return protocol.get_kind(name)
    except InvalidInput:
        raise InvalidInput(
            f"task kind {name!r} is registered in the supervisor's process but not by importing "
            f"{module!r}: register kinds at the top level of an importable module, so the processes "
            "that run tasks can find them"
        ) from None


def _caused_by_memory(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 20:
        if isinstance(current, MemoryError):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _key(raw: Any) -> tuple[int, int]:
    return (int(raw[0]), int(raw[1]))


def _die_with_zygote(zygote_pid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != zygote_pid:  # the zygote died before the line above took effect
        os._exit(0)


def main(sock: socket.socket, *, zygote_pid: int, memory_limit_mb: int | None) -> NoReturn:
    """The host's life, in the forked child. Never returns."""
    _die_with_zygote(zygote_pid)
    os.setpgid(0, 0)  # a group of its own: stopping the host stops what its task started too
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with open(os.devnull, "rb") as null:
        os.dup2(null.fileno(), 0)
    sys.stdin = open(os.devnull)  # lives as long as the process
    if memory_limit_mb:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = memory_limit_mb * 1024 * 1024
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    sock.setblocking(True)
    runner = Runner(sock, memory_limit_mb)
    capture.install(runner.tail_of_thread, runner.tail_of_run)
    runner.serve()
    os._exit(0)

