"""Structured logs: --log-format json / TENURE_LOG_FORMAT, one JSON object per line with the ids."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import service
from service.errors import InvalidInput
from service.faces import logs
from tests.acceptance.procs import REPO
from tests.conftest import wait_for


def test_a_message_becomes_fields_named_as_in_the_database() -> None:
    fields = logs.fields_of("attempt.failed task=12 attempt=2 supervisor=3 error='ValueError: no, said \\'x\\''")
    assert fields == {"event": "attempt.failed", "task_id": 12, "attempt": 2, "supervisor_id": 3,
                      "error": "ValueError: no, said 'x'"}
    assert logs.fields_of("run.completed run=7") == {"event": "run.completed", "run_id": 7}
    assert logs.fields_of("plain words, no pairs") == {}


def test_each_record_is_one_line_of_json_with_its_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("tenure.x", logging.ERROR, __file__, 1, "loop.crashed supervisor=%s", (4,),
                                   sys.exc_info())
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["event"], entry["supervisor_id"]) == ("ERROR", "tenure.x",
                                                                                         "loop.crashed", 4)
    assert entry["message"] == "loop.crashed supervisor=4" and "RuntimeError: boom" in entry["exception"]
    assert entry["time"].endswith("Z")


def test_the_format_comes_from_the_flag_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENURE_LOG_FORMAT", raising=False)
    assert logs.chosen_format(None) == "text"
    monkeypatch.setenv("TENURE_LOG_FORMAT", "JSON")
    assert logs.chosen_format(None) == "json"
    assert logs.chosen_format("text") == "text"
    monkeypatch.setenv("TENURE_LOG_FORMAT", "yaml")
    with pytest.raises(InvalidInput, match="TENURE_LOG_FORMAT 'yaml' is not one of text, json"):
        logs.chosen_format(None)


def test_a_supervisor_running_a_task_logs_json_lines_with_its_ids(sqlite_url: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    tenure_log = logging.getLogger("tenure")
    tenure_log.addHandler(handler)
    old_level = tenure_log.level
    tenure_log.setLevel(logging.INFO)
    t = service.open(sqlite_url)
    try:
        run_id = t.submit_run("echo", [{"n": 1}])
        sup = t.start_supervisor(heartbeat_s=0.05)
        try:
            t.wait_run(run_id, 10)
        finally:
            assert sup.stop(grace_s=0.0, timeout_s=5)
        wait_for(lambda: "supervisor.stopped" in stream.getvalue(), 5, "the supervisor's last line")
    finally:
        tenure_log.removeHandler(handler)
        tenure_log.setLevel(old_level)
        t.close()
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    succeeded = [e for e in entries if e.get("event") == "attempt.succeeded"]
    assert len(succeeded) == 1 and succeeded[0]["attempt"] == 1
    assert isinstance(succeeded[0]["task_id"], int) and isinstance(succeeded[0]["supervisor_id"], int)
    started = [e for e in entries if e.get("event") == "attempt.started"]
    assert started and started[0]["run_id"] == run_id and started[0]["task_id"] == succeeded[0]["task_id"]
    assert any(e.get("event") == "run.completed" and e["run_id"] == run_id for e in entries)


def test_the_cli_refuses_an_unknown_format_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "service", "worker", "--db", str(tmp_path / "t.db"),
                          "--log-format", "yaml"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr
    assert "--log-format 'yaml' is not one of text, json" in out.stderr
