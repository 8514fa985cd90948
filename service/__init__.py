"""tenure: a persistent, crash-recoverable job service.

The public Python API::

    import service as tenure
    t = tenure.open("tenure.db")
    run_id = t.submit_run(50, "sleep", {"min_seconds": 1, "max_seconds": 3})
    supervisor = t.start_supervisor()
    print(t.wait_run(run_id, timeout_s=60).counts)
    supervisor.stop()

Task kinds are registered with :func:`register`; raise :class:`PermanentError` from task code
for failures a retry cannot fix (any other exception is retried with backoff).

Names are resolved lazily (PEP 562): a task process imports ``service.task_process.protocol`` and the
user's kinds without loading SQLAlchemy, the web stack or the supervisor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Tenure": "service.faces.client", "open": "service.faces.client",
    "Settings": "service.config",
    "Conflict": "service.errors", "InvalidInput": "service.errors", "NotFound": "service.errors",
    "PermanentError": "service.errors", "SchemaError": "service.errors", "StorageError": "service.errors",
    "TenureError": "service.errors", "TransientError": "service.errors",
    "TaskContext": "service.task_process.protocol", "register": "service.task_process.protocol",
    "schedule": "service.faces.schedules",
    "Supervisor": "service.supervisor.loop",
}

__all__ = [
    "Conflict", "InvalidInput", "NotFound", "PermanentError", "SchemaError", "Settings",
    "StorageError", "Supervisor", "TaskContext", "Tenure", "TenureError", "TransientError",
    "open", "register", "schedule",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from service.config import Settings
    from service.errors import (
        Conflict,
        InvalidInput,
        NotFound,
        PermanentError,
        SchemaError,
        StorageError,
        TenureError,
        TransientError,
    )
    from service.faces.client import Tenure, open
    from service.faces.schedules import schedule
    from service.supervisor.loop import Supervisor
    from service.task_process.protocol import TaskContext, register
