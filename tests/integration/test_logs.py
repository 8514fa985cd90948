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


def test_a_heartbeat_appends_only_what_was_written_since_the_last_one(open_tenure) -> None:  # type: ignore[no-untyped-def]
    """A chatty task used to have its whole 64 KiB tail rewritten at every beat: now each beat sends the
    new text, the database appends it and keeps the last 64 KiB, and logs_cut counts what fell out."""
    from service.storage.leases import Leases
    from service.storage.models import LOG_TAIL_CHARS
    from service.supervisor.attempt import Execution

    t = open_tenure()
    leases = Leases(t.engine)
    me = leases.register("logs", 1, None, None)
    t.submit_run(1, "echo")
    (lease,) = leases.claim(me, 1)
    ex = Execution(lease=lease, started_mono=0.0, deadline_mono=60.0)
    sent: list[int] = []

    def beat() -> None:
        fresh = ex.new_logs()
        if fresh is not None:
            total, text, whole = fresh
            sent.append(len(text))
            leases.heartbeat(me, logs=[(lease.task_id, lease.attempt, text, total, whole)])
            ex.flushed_logs_total = total

    line = "x" * 99 + "\n"
    ex.add_logs(line * 700, 0)  # 70,000 characters: more than the tail keeps
    kept = len(ex.logs()[0])
    beat()
    for i in range(3):
        ex.add_logs(f"line {i}\n", 0)
        beat()
    assert sent == [kept, 7, 7, 7], sent
    (attempt,) = t.attempts(lease.task_id)
    assert (attempt.logs, attempt.logs_cut) == ex.logs(), "the stored tail and its cut differ from the supervisor's"
    ex.add_logs("y" * 100 + "\n", 0)  # the stored tail overflows: the database keeps the last 64 KiB
    beat()
    (attempt,) = t.attempts(lease.task_id)
    assert attempt.logs is not None and len(attempt.logs) == LOG_TAIL_CHARS and attempt.logs.endswith("y\n")
    assert attempt.logs_cut == 70_000 + 21 + 101 - LOG_TAIL_CHARS
    beat()
    assert len(sent) == 5, "a beat with nothing new sends nothing"


def test_counts_of_output_past_two_billion_characters_are_stored(open_tenure) -> None:  # type: ignore[no-untyped-def]
    """A task that printed more than 2**31 characters: PostgreSQL's INTEGER refused the count, and with it
    every heartbeat of its supervisor (its neighbours' leases were reclaimed) and then its own end."""
    from service.storage.leases import Leases
    from service.storage.models import Outcome

    t = open_tenure()
    leases = Leases(t.engine)
    me = leases.register("loud", 1, None, None)
    t.submit_run(1, "echo")
    (lease,) = leases.claim(me, 1)
    total = 3 * 2**31
    beat = leases.heartbeat(me, logs=[(lease.task_id, lease.attempt, "the last line\n", total, True)])
    assert beat.held == {lease.key} and beat.alive
    assert leases.finish(lease, me, outcome=Outcome.SUCCEEDED, result=1, logs="the last line\n",
                         logs_cut=total - 14)
    (attempt,) = t.attempts(lease.task_id)
    assert (attempt.outcome, attempt.logs_cut) == ("succeeded", total - 14)
