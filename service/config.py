"""Settings with their defaults; environment variables override, flags override those."""

from __future__ import annotations

import os
from dataclasses import dataclass

from service.errors import InvalidInput


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


@dataclass(frozen=True)
class Settings:
    """How a supervisor behaves. Every field is in seconds unless its name says otherwise."""

    lease_ttl_s: float = 15.0  # a lease not heartbeated for this long is reaped
    heartbeat_s: float = 5.0  # how often one statement extends all of a supervisor's leases
    concurrency: int = 64  # tasks executing at once (the headline run's 50 all fit)
    idle_poll_s: float = 0.2  # how often an idle supervisor looks for due work
    reap_every_s: float = 1.0  # how often it looks for expired leases
    poll_first_s: float = 0.05  # a polling task's first check_output() after run() returns
    poll_factor: float = 1.5  # each later check waits this much longer ...
    poll_max_s: float = 5.0  # ... up to this
    task_timeout_s: float = 3600.0  # an attempt running longer fails with a timeout error
    shutdown_grace_s: float = 5.0  # a graceful stop waits this long for running tasks
    retry_base_s: float = 1.0  # backoff after the first failure is uniform in [0, this]
    retry_cap_s: float = 60.0  # ... doubling per attempt, never above this

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise InvalidInput(f"concurrency must be at least 1, got {self.concurrency}")
        if self.heartbeat_s >= self.lease_ttl_s:
            raise InvalidInput(
                f"the heartbeat interval ({self.heartbeat_s} s) must be shorter than the lease TTL "
                f"({self.lease_ttl_s} s), or every lease expires between beats"
            )

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Defaults, then TENURE_LEASE_TTL_S / TENURE_HEARTBEAT_S / TENURE_CONCURRENCY, then overrides."""
        values: dict[str, object] = {
            "lease_ttl_s": _env_float("TENURE_LEASE_TTL_S", cls.lease_ttl_s),
            "heartbeat_s": _env_float("TENURE_HEARTBEAT_S", cls.heartbeat_s),
            "concurrency": int(_env_float("TENURE_CONCURRENCY", cls.concurrency)),
            "task_timeout_s": _env_float("TENURE_TASK_TIMEOUT_S", cls.task_timeout_s),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
