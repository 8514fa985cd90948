"""Settings with their defaults; environment variables override, flags override those."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from service.errors import InvalidInput

DEFAULT_MEMORY_LIMIT_MB = 2048  # per task process; generous for real work, fatal for a runaway
MIN_MEMORY_LIMIT_MB = 64  # a Python process with the task protocol loaded needs about 30 MiB
MAX_MEMORY_LIMIT_MB = 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNIT_MB = {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 * 1024}


def parse_memory(text: str, what: str = "--memory-limit") -> int | None:
    """``512M``, ``2G``, ``1.5GiB``, ``800`` (MiB) as whole MiB; ``0`` or ``none`` for no limit.

    Raises:
        InvalidInput: not a size, or outside [64 MiB, 1 TiB].
    """
    if text.strip().lower() in ("0", "none", "off", "unlimited"):
        return None
    match = _SIZE.match(text)
    if match is None:
        raise InvalidInput(f"{what} {text!r} is not a size; write it like 512M or 2G (0 or none: no limit)")
    mb = int(float(match.group(1)) * _UNIT_MB[match.group(2).lower()])
    check_memory_mb(mb, what)
    return mb


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str, what: str = "--older-than") -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``, or plain seconds, as seconds.

    Raises:
        InvalidInput: not a duration, or zero.
    """
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise InvalidInput(f"{what} {text!r} is not a duration; write it like 30d, 12h or 90m")
    return float(match.group(1)) * _UNIT_S[(match.group(2) or "s").lower()]


QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")  # whole: a trailing newline is no name


def check_queue_name(name: object, what: str = "queue") -> str:
    """A queue's name: 1 to 100 letters, digits, ``_ . : -``, starting with a letter or digit.

    Raises:
        InvalidInput: anything else.
    """
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise InvalidInput(f"{what} must be a name of 1 to 100 letters, digits, '_', '.', ':' or '-' (starting "
                           f"with a letter or digit), got {name!r}")
    return name


def parse_queues(value: str | tuple[str, ...] | list[str], what: str = "--queues") -> tuple[str, ...]:
    """``imports,mail`` (or a sequence of names) as a tuple of queue names, each checked once.

    Raises:
        InvalidInput: empty, or a name that is not a queue's.
    """
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n != ""]
    if not names:
        raise InvalidInput(f"{what} names no queue; give one or more names separated by commas, like imports,mail")
    return tuple(dict.fromkeys(check_queue_name(n, f"{what}: a queue") for n in names))


def check_memory_mb(mb: object, what: str = "memory_limit_mb") -> None:
    if isinstance(mb, bool) or not isinstance(mb, int) or not MIN_MEMORY_LIMIT_MB <= mb <= MAX_MEMORY_LIMIT_MB:
        raise InvalidInput(
            f"{what} must be between {MIN_MEMORY_LIMIT_MB} MiB and {MAX_MEMORY_LIMIT_MB // 1024} GiB, got {mb!r}"
        )


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"environment variable {name}={raw!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise InvalidInput(f"environment variable {name}={raw!r} must be a positive number")
    return value


def _env_memory(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return parse_memory(raw, f"environment variable {name}")


@dataclass(frozen=True)
class Settings:
    """How a supervisor behaves. Every field is in seconds unless its name says otherwise."""

    lease_ttl_s: float = 15.0  # a lease not heartbeated for this long is reaped
    heartbeat_s: float = 5.0  # how often one statement extends all of a supervisor's leases
    concurrency: int = 64  # tasks executing at once (the headline run's 50 all fit)
    idle_poll_s: float = 0.2  # how often an idle supervisor looks for due work
    reclaim_every_s: float = 0.4  # how often it looks for supervisors whose heartbeat went silent (a dead one's
    # leases, and the slots they hold under a limit, come back within its TTL + 2 x this, at worst)
    lease_check_s: float = 0.25  # while it runs tasks, how often it looks for cancelled or lost leases
    poll_first_s: float = 0.05  # a polling task's first check_output() after run() returns
    poll_factor: float = 1.5  # each later check waits this much longer ...
    poll_max_s: float = 5.0  # ... up to this
    task_timeout_s: float = 3600.0  # an attempt running longer is stopped and fails with a timeout error
    kill_grace_s: float = 0.5  # a task process stopped with SIGTERM gets SIGKILL after this
    memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB  # per task process (RLIMIT_DATA); None: none
    shutdown_grace_s: float = 5.0  # a graceful stop waits this long for running tasks
    process_start_s: float = 60.0  # an attempt waits this long at most for a task process (not its timeout)
    retry_base_s: float = 1.0  # backoff after the first failure is uniform in [0, this]
    retry_cap_s: float = 60.0  # ... doubling per attempt, never above this
    prune_after_s: float | None = None  # if set, delete what ended longer ago than this (see `tenure prune`) ...
    prune_every_s: float = 3600.0  # ... at start and this often
    queues: tuple[str, ...] | None = None  # the queues it takes tasks from (None: every queue)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidInput(f"concurrency must be at least 1, got {self.concurrency}")
        if self.heartbeat_s >= self.lease_ttl_s:
            raise InvalidInput(
                f"the heartbeat interval ({self.heartbeat_s} s) must be shorter than the lease TTL "
                f"({self.lease_ttl_s} s), or every lease expires between beats"
            )
        if self.memory_limit_mb is not None:
            check_memory_mb(self.memory_limit_mb, "the memory limit")
        if self.queues is not None:
            object.__setattr__(self, "queues", parse_queues(self.queues))

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Defaults, then TENURE_LEASE_TTL_S / TENURE_HEARTBEAT_S / TENURE_CONCURRENCY /
        TENURE_TASK_TIMEOUT_S / TENURE_MEMORY_LIMIT / TENURE_PRUNE_AFTER (like 30d), then
        ``overrides`` that are not None."""
        values: dict[str, object] = {
            "lease_ttl_s": _env_float("TENURE_LEASE_TTL_S", cls.lease_ttl_s),
            "heartbeat_s": _env_float("TENURE_HEARTBEAT_S", cls.heartbeat_s),
            "concurrency": int(_env_float("TENURE_CONCURRENCY", cls.concurrency)),
            "task_timeout_s": _env_float("TENURE_TASK_TIMEOUT_S", cls.task_timeout_s),
            "memory_limit_mb": _env_memory("TENURE_MEMORY_LIMIT", cls.memory_limit_mb),
        }
        if os.environ.get("TENURE_QUEUES"):
            values["queues"] = parse_queues(os.environ["TENURE_QUEUES"], "TENURE_QUEUES")
        if os.environ.get("TENURE_PRUNE_AFTER"):
            values["prune_after_s"] = parse_duration(os.environ["TENURE_PRUNE_AFTER"], "TENURE_PRUNE_AFTER")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
