"""Schemathesis against a real ``tenure serve``: the OpenAPI description and the code agree.

Every check (``--checks all``: no 5xx, answers match their schemas and status codes, valid
requests are accepted and invalid ones refused, Allow headers, …) over the coverage, fuzzing
and stateful phases, with a fixed seed and budget; strings hold no NUL, which the description
refuses in words. Schemathesis has a virtualenv of its own
(``make test`` makes it: ``.venv-schemathesis``), so none of its dependencies are tenure's.
The server runs no supervisor: this checks the HTTP layer, and runs of 100,000 tasks of a
minute each would only load the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.procs import REPO, Server
from tests.conftest import report

ST = Path(os.environ.get("TENURE_SCHEMATHESIS", REPO / ".venv-schemathesis" / "bin" / "st"))
SEED = int(os.environ.get("TENURE_SCHEMATHESIS_SEED", "20261201"))
EXAMPLES = int(os.environ.get("TENURE_SCHEMATHESIS_EXAMPLES", "10"))
# Rules JSON Schema cannot state, which the description states in words, refuse some schema-valid bodies
# with 422: a start more than a year away (start_at), an expression that never fires or a zone this machine
# does not know (a schedule's cron and timezone), one of task and run, a queue not declared while others are,
# a rate's count (1 to 100,000) and period (1 ms to 7 days). Only there is 422 a right answer to valid-looking
# data; everywhere else the default holds. (An operation is chosen by its path or its method, so the second
# entry covers reading a queue or key too, where a well-formed name of none is 404.)
CONFIG = """
[[operations]]
include-path-regex = "^/api/(runs|tasks|schedules)$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422"]

[[operations]]
include-path-regex = "^/api/(queues|keys)/"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "422"]
"""


@pytest.fixture
def server(tmp_path: Path) -> Server:
    if not ST.exists():
        if os.environ.get("CI"):
            pytest.fail(f"schemathesis is not installed at {ST}: `make test` installs it")
        pytest.skip(f"schemathesis is not installed at {ST}: `make test` installs it")
    server = Server(tmp_path / "api.db", tmp_path / "serve.log", args=("--no-worker",))
    server.start()
    yield server
    server.stop()


def test_the_api_does_what_its_openapi_description_says(server: Server, tmp_path: Path) -> None:
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    command = [str(ST), "--config-file", str(tmp_path / "schemathesis.toml"), "run", f"{server.url}/openapi.json",
               "--checks", "all",
               "--phases", "examples,coverage,fuzzing,stateful", "--seed", str(SEED), "--max-examples", str(EXAMPLES),
               "--workers", "1", "--request-timeout", "60", "--generation-database", "none", "--no-color",
               # The description says text may hold no NUL (the database cannot store one), which JSON Schema
               # cannot say of free-form args; tests/web/test_text.py and test_fuzz.py send NULs instead.
               "--generation-allow-x00", "false"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=400, check=False)
    out = done.stdout + done.stderr
    cases = re.search(r"(\d+) generated, .*", out)
    report(f"schemathesis: seed {SEED}, --max-examples {EXAMPLES}, all checks: "
           f"{cases.group(0) if cases else 'no summary'}")
    assert done.returncode == 0, out[-6000:]
    assert cases and "failure" not in cases.group(0) and "errored" not in cases.group(0), cases
