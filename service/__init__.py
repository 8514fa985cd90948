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
"""

from service.client import Tenure, open
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
from service.protocol import TaskContext, register
from service.supervisor import Supervisor

__all__ = [
    "Conflict", "InvalidInput", "NotFound", "PermanentError", "SchemaError", "Settings",
    "StorageError", "Supervisor", "TaskContext", "Tenure", "TenureError", "TransientError",
    "open", "register",
]
