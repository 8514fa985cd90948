"""The project's own fixtures, for the review's reproductions."""

from tests.conftest import (  # noqa: F401
    db_url,
    fake_clock,
    migrated_template,
    no_process_left_behind,
    open_tenure,
    pg_admin,
    pg_url,
    sqlite_url,
)
from tests.integration.conftest import supervise, supervisor_defaults, t  # noqa: F401
