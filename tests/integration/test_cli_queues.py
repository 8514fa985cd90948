"""The `tenure` command's flow control: `queues`, `queue show|set|pause|resume`, `key set`,
`run pause|resume`, `submit --queue/--priority/--key/--key-limit/--unique/--args`, and
`worker --queues` / `serve --queues`.

Run as a person would, through ``main()`` with its output captured, on a real SQLite file and,
where it says so, on PostgreSQL too; `worker --queues` is the real command in a process of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import service
from service.faces.cli import main
from service.faces.cli_queues import QUEUES_COLUMNS
from tests import kinds_for_tests  # noqa: F401 - registers the t_* kinds
from tests.conftest import wait_for


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, message: str) -> None:
    assert err.count("\n") == 1 and err.startswith("tenure: error: "), err
    assert message in err, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    """The lines a command that must succeed printed."""
    code, out, err = run_cli(capsys, *argv)
    assert (code, err) == (0, ""), (code, out, err)
    return out.splitlines()


def piped(capsys: pytest.CaptureFixture[str], db: str) -> dict[str, dict[str, str]]:
    """`tenure queues` piped, as {queue: {column: cell}}."""
    header, *rows = ok(capsys, "queues", "--db", db)
    assert tuple(header.split("\t")) == QUEUES_COLUMNS
    return {cells[0]: dict(zip(QUEUES_COLUMNS, cells, strict=True)) for cells in (r.split("\t") for r in rows)}


def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((160, 50)))


def age_waiting(t: service.Tenure, queue: str, seconds: float) -> None:
    """Make the queue's waiting tasks look as if they had waited ``seconds`` (instead of waiting)."""
    at = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds)
    with t.engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET queued_at = :at WHERE queue = :q AND status = 'queued'"),
                     {"at": at, "q": queue})


def tasks_file(tmp_path: Path, n: int, args: dict[str, Any]) -> str:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(args) + "\n" for _ in range(n)))
    return str(path)


# -- queue set / show / queues ---------------------------------------------------------------

def test_queue_set_declares_it_and_a_limit_not_given_stays(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ok(capsys, "queue", "set", "imports", "--db", db_url, "--limit", "2", "--rate", "10/s", "--age", "10m") == [
        "queue imports: at most 2 running, at most 10/s starts; a task waiting over 10 min goes ahead of higher "
        "priorities"]
    assert ok(capsys, "queue", "set", "imports", "--db", db_url, "--rate", "5/30s") == [
        "queue imports: at most 2 running, at most 5/30s starts; a task waiting over 10 min goes ahead of higher "
        "priorities"]
    assert ok(capsys, "queue", "set", "imports", "--db", db_url, "--limit", "none", "--rate", "none") == [
        "queue imports: no limit on running tasks, no rate limit; a task waiting over 10 min goes ahead of higher "
        "priorities"]
    t = service.open(db_url, migrate=False)
    try:
        q = t.queue("imports")
    finally:
        t.close()
    assert (q.declared, q.concurrency, q.rate_count, q.age_s) == (True, None, None, 600.0)


def test_queue_set_makes_a_new_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "new.db"
    assert ok(capsys, "queue", "set", "imports", "--db", str(db), "--limit", "2")[0].startswith(
        "queue imports: at most 2 running, no rate limit;")
    assert db.exists()


def test_queues_piped_is_one_tab_separated_line_per_queue(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "queue", "set", "imports", "--db", db_url, "--limit", "4", "--rate", "100/m")
    ok(capsys, "submit", "--db", db_url, "--tasks", "3", "--kind", "echo", "--queue", "imports")
    ok(capsys, "submit", "--db", db_url, "--tasks", "2", "--kind", "echo", "--queue", "imports", "--in", "1h")
    rows = piped(capsys, db_url)
    imports = rows["imports"]
    assert {k: v for k, v in imports.items() if k != "oldest wait (s)"} == {
        "queue": "imports", "paused": "", "waiting": "5", "due": "3", "running": "0", "limit": "4", "rate": "100/m"}
    assert float(imports["oldest wait (s)"]) < 60


def test_queues_on_a_terminal_shows_running_against_the_limit_and_the_oldest_wait_in_words(
        db_url: str, t: service.Tenure, supervise: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ok(capsys, "queue", "set", "imports", "--db", db_url, "--limit", "2", "--rate", "10/s")
    ok(capsys, "submit", "--db", db_url, "--kind", "t_blocking", "--queue", "imports",
       "--tasks-file", tasks_file(tmp_path, 5, {"seconds": 60}))
    ok(capsys, "submit", "--db", db_url, "--tasks", "1", "--kind", "echo", "--in", "1h")  # default: nothing runs
    age_waiting(t, "imports", 180)  # before the supervisor starts: SQLite has one writer
    supervise()
    wait_for(lambda: t.queue("imports").running == 2, 20, "two tasks of imports running")
    on_a_terminal(monkeypatch)
    code, out, _ = run_cli(capsys, "queues", "--db", db_url)
    assert code == 0 and "tenure queues" in out
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # a terminal gets styles
    rows = [[c.strip() for c in re.split("[│┃]", line)[1:-1]] for line in plain.splitlines()
            if len(re.findall("[│┃]", line)) == 7]
    cells = {row[0]: row[1:] for row in rows}
    assert cells["queue"] == ["paused", "waiting", "running/limit", "rate", "oldest wait"]
    assert cells["imports"] == ["", "3", "2/2", "10/s", "3 min"]
    assert cells["default"] == ["", "1 (1 later)", "0", "—", "—"]
    assert t.queue("imports").running == 2  # the limit held while we looked
    lines = ok(capsys, "queue", "show", "imports", "--db", db_url)
    assert lines == ["queue imports (declared with `tenure queue set`)",
                     "  state      active",
                     "  running    2 of at most 2",
                     "  rate       at most 10/s starts",
                     "  ageing     a task waiting over 5 min goes ahead of higher priorities",
                     "  waiting    3, the oldest for 3 min"]
    t.cancel_run(1)


def test_a_new_database_has_the_default_queue_alone_and_empty(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    ok(capsys, "migrate", "--db", db)
    assert piped(capsys, db) == {"default": {"queue": "default", "paused": "", "waiting": "0", "due": "0",
                                             "running": "0", "limit": "", "rate": "", "oldest wait (s)": ""}}


# -- pause / resume --------------------------------------------------------------------------

def test_pause_and_resume_a_queue(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "queue", "set", "imports", "--db", db_url)
    ok(capsys, "submit", "--db", db_url, "--tasks", "3", "--kind", "echo", "--queue", "imports")
    assert ok(capsys, "queue", "pause", "imports", "--db", db_url) == [
        "paused queue imports: nothing of it starts until `tenure queue resume imports` (3 waiting)"]
    assert piped(capsys, db_url)["imports"]["paused"] == "paused"
    state = ok(capsys, "queue", "show", "imports", "--db", db_url)[1]
    assert state.startswith("  state      paused since ") and state.endswith(
        "nothing of it starts until `tenure queue resume imports`; what runs finishes")
    assert ok(capsys, "queue", "resume", "imports", "--db", db_url) == [
        "resumed queue imports: its tasks may start again (3 waiting, 0 running)"]
    assert piped(capsys, db_url)["imports"]["paused"] == ""
    t = service.open(db_url, migrate=False)
    try:
        assert not t.queue("imports").paused
    finally:
        t.close()


def test_run_pause_and_resume(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "submit", "--db", db_url, "--tasks", "2", "--kind", "echo")  # no worker: it stays live
    assert ok(capsys, "run", "pause", "1", "--db", db_url) == [
        "paused run 1: none of its tasks starts until `tenure run resume 1`; what runs finishes"]
    t = service.open(db_url, migrate=False)
    try:
        assert t.run(1).paused_at is not None
        assert ok(capsys, "run", "pause", "1", "--db", db_url) == [
            "run 1 was paused already (`tenure run resume 1` resumes it)"]
        assert ok(capsys, "run", "resume", "1", "--db", db_url) == ["resumed run 1: its waiting tasks may start"]
        assert t.run(1).paused_at is None
        assert ok(capsys, "run", "resume", "1", "--db", db_url) == ["run 1 was not paused; nothing changed"]
        t.cancel_run(1)
    finally:
        t.close()
    code, out, err = run_cli(capsys, "run", "pause", "1", "--db", db_url)
    assert (code, out) == (1, "")
    one_error_line(err, "run 1 has ended (cancelled); only a live run can be paused or resumed")
    code, out, err = run_cli(capsys, "run", "resume", "99", "--db", db_url)
    assert (code, out) == (2, "")
    one_error_line(err, "there is no run 99")


def test_unknown_queue_is_one_line_naming_the_queues(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "queue", "set", "imports", "--db", db_url)
    for verb in ("show", "pause", "resume"):
        code, out, err = run_cli(capsys, "queue", verb, "mail", "--db", db_url)
        assert (code, out) == (2, "")
        one_error_line(err, "there is no queue 'mail'; queues: default, imports")


@pytest.mark.parametrize("command", ["queue", "key", "run"])
def test_a_command_without_its_action_shows_its_own_help(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         command: str) -> None:
    code, out, err = run_cli(capsys, command, "--db", str(tmp_path / "t.db"))
    assert (code, out) == (2, "") and err.startswith(f"usage: tenure {command} ")


# -- keys ------------------------------------------------------------------------------------

def test_key_set_and_a_limit_not_given_stays(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ok(capsys, "key", "set", "customer-42", "--db", db_url, "--limit", "2", "--rate", "5/30s") == [
        "key customer-42: at most 2 running, at most 5/30s starts; 0 running now"]
    assert ok(capsys, "key", "set", "customer-42", "--db", db_url, "--rate", "none") == [
        "key customer-42: at most 2 running, no rate limit; 0 running now"]
    t = service.open(db_url, migrate=False)
    try:
        k = t.key("customer-42")
    finally:
        t.close()
    assert (k.concurrency, k.rate_count) == (2, None)


# -- submit ----------------------------------------------------------------------------------

def test_submit_places_a_run_in_its_queue_with_priority_and_key(db_url: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "queue", "set", "imports", "--db", db_url)
    assert ok(capsys, "submit", "--db", db_url, "--tasks", "3", "--kind", "echo", "--queue", "imports",
              "--priority", "5", "--key", "customer-42", "--key-limit", "2") == [
        "submitted run 1: 3 echo tasks in queue imports", "1"]
    t = service.open(db_url, migrate=False)
    try:
        tasks = t.run_with_tasks(1)[1]
        assert {(x.queue, x.priority, x.limit_key) for x in tasks} == {("imports", 5, "customer-42")}
        assert t.key("customer-42").concurrency == 2
    finally:
        t.close()


def test_submit_to_an_undeclared_queue_once_queues_are_declared_writes_nothing(
        db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "queue", "set", "imports", "--db", db_url)
    for shape in (["--tasks", "2"], ["--args", "{}"]):
        code, out, err = run_cli(capsys, "submit", "--db", db_url, "--kind", "echo", "--queue", "mail", *shape)
        assert (code, out) == (2, "")
        one_error_line(err, "queue 'mail' is not declared; the queues are: default, imports (declare a new one "
                            "with `tenure queue set NAME`)")
    t = service.open(db_url, migrate=False)
    try:
        assert t.runs() == [] and [q.waiting for q in t.queues()] == [0, 0]
    finally:
        t.close()


def test_submit_one_task_with_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    assert ok(capsys, "submit", "--db", db, "--kind", "echo", "--args", '{"path": "a.csv"}', "--name", "a") == [
        "submitted task 1: one echo task", "1"]
    second = ok(capsys, "submit", "--db", db, "--kind", "echo", "--args", "{}", "--queue", "mail", "--priority", "-3")
    assert second == ["submitted task 2: one echo task in queue mail", "2"]
    t = service.open(db, migrate=False)
    try:
        one, two = t.task(1), t.task(2)
    finally:
        t.close()
    assert (one.run_id, one.args, one.label, one.queue) == (None, {"path": "a.csv"}, "a", "default")
    assert (two.queue, two.priority) == ("mail", -3)


def test_submit_unique_names_the_task_that_holds_the_key_and_exits_0(db_url: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert ok(capsys, "submit", "--db", db_url, "--kind", "echo", "--args", '{"day": 1}', "--unique", "nightly") == [
        "submitted task 1: one echo task", "1"]
    assert ok(capsys, "submit", "--db", db_url, "--kind", "echo", "--args", '{"day": 2}', "--unique", "nightly") == [
        "task 1 with unique key 'nightly' is already queued; not submitted again", "1"]
    t = service.open(db_url, migrate=False)
    try:
        assert t.queue("default").waiting == 1
        t.cancel_task(1)  # unique while active: once it has ended, the key is free
    finally:
        t.close()
    assert ok(capsys, "submit", "--db", db_url, "--kind", "echo", "--unique", "nightly") == [
        "submitted task 2: one echo task", "2"]


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["queue", "set", "imports", "--limit", "0"], "--limit must be a whole number from 1 to 100,000"),
        (["queue", "set", "imports", "--limit", "lots"], "--limit takes a whole number from 1 (the most running at "
                                                         "once) or none (no limit), got 'lots'"),
        (["queue", "set", "imports", "--rate", "10"], "--rate '10' is not a rate; write it as starts per period, "
                                                      "like 10/s"),
        (["queue", "set", "imports", "--rate", "0/s"], "--rate: the number of starts must be a whole number from 1"),
        (["queue", "set", "imports", "--age", "soon"], "--age 'soon' is not a duration"),
        (["queue", "set", "bad name"], "queue must be a name of 1 to 100 letters"),
        (["key", "set", "customer-42", "--limit", "-1"], "--limit must be a whole number from 1"),
        (["key", "set", "customer-42", "--rate", "fast"], "--rate 'fast' is not a rate"),
        (["key", "set", " "], "key must be text of 1 to 200 characters"),
        (["submit", "--tasks", "1", "--kind", "echo", "--priority", "5000"],
         "--priority must be a whole number from -1000 to 1000"),
        (["submit", "--tasks", "1", "--kind", "echo", "--key-limit", "2"], "--key-limit needs a key"),
        (["submit", "--tasks", "1", "--kind", "echo", "--key", "k", "--key-limit", "0"],
         "--key-limit must be a whole number from 1"),
        (["submit", "--tasks", "1", "--kind", "echo", "--queue", "no spaces"], "--queue must be a name of 1 to 100"),
        (["submit", "--tasks", "1", "--kind", "echo", "--unique", "u"], "--tasks goes with a run; one task (--args "
                                                                         "or --unique) takes its args as --args JSON"),
        (["submit", "--kind", "sleep", "--min-seconds", "1", "--unique", "u"], "--min-seconds goes with a run"),
        (["submit", "--kind", "echo", "--args", "{"], "--args is not JSON"),
        (["submit", "--kind", "echo", "--args", "[1]"], "args must be a JSON object"),
        (["submit", "--kind", "echo", "--args", "{}", "--unique", " "], "--unique must be text of 1 to 200"),
        (["worker", "--queues", ""], "--queues names no queue; give one or more names separated by commas"),
        (["worker", "--queues", " , "], "--queues names no queue"),
        (["worker", "--queues", "imports,no spaces"], "--queues: a queue must be a name of 1 to 100 letters"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         argv: list[str], message: str) -> None:
    db = tmp_path / "t.db"
    code, out, err = run_cli(capsys, *argv, "--db", str(db))
    assert (code, out) == (2, "")
    one_error_line(err, message)
    assert not db.exists()


def test_serve_queues_reaches_the_embedded_supervisors_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import web.app
    from web import cli as web_cli

    made: dict[str, Any] = {}
    monkeypatch.setattr(web.app, "create_app", lambda url, **kwargs: made.update(kwargs) or object())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    with socket.socket() as probe:  # a port nobody holds, for the check that it is free
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = str(tmp_path / "t.db")
    assert web_cli.main(["serve", "--db", db, "--port", str(port), "--queues", "imports, mail,imports"]) == 0
    assert made["settings"].queues == ("imports", "mail") and made["supervise"]
    capsys.readouterr()
    for argv, message in ((["--queues", ""], "--queues names no queue"),
                          (["--queues", "imports", "--no-worker"],
                           "--queues chooses what the embedded worker takes; with --no-worker there is none")):
        assert web_cli.main(["serve", "--db", str(tmp_path / "other.db"), "--port", str(port), *argv]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        one_error_line(err, message)
    assert not (tmp_path / "other.db").exists()


# -- worker --queues -------------------------------------------------------------------------

def test_worker_queues_takes_tasks_of_those_queues_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real `tenure worker --queues imports`: the imports run completes; the mail run, due
    before the worker started, is never claimed. A named queue nobody can submit to is warned of."""
    from tests.acceptance.procs import REPO

    db, log = str(tmp_path / "t.db"), tmp_path / "worker.log"
    for queue in ("imports", "mail"):
        ok(capsys, "queue", "set", queue, "--db", db)
    ok(capsys, "submit", "--db", db, "--tasks", "3", "--kind", "echo", "--queue", "mail")  # run 1, due first
    ok(capsys, "submit", "--db", db, "--tasks", "3", "--kind", "echo", "--queue", "imports")  # run 2
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", db, "--queues", "imports,imprts",
                                 "--heartbeat", "0.1", "--lease-ttl", "2"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    t = service.open(db, migrate=False)
    try:
        wait_for(lambda: t.run(2).status != "running" or proc.poll() is not None, 30, "the imports run to end")
        assert proc.poll() is None, log.read_text()
        assert t.run(2).counts["succeeded"] == 3
        mail = t.run(1)
        assert mail.status == "running" and mail.counts["queued"] == 3
        assert all(t.attempts(task.id) == [] for task in t.run_with_tasks(1)[1])
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: proc.poll() is not None, 10, "the worker to stop")
        assert proc.returncode == 0, log.read_text()
        assert t.run(1).counts["queued"] == 3  # still nobody's
    finally:
        t.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text_ = log.read_text()
    assert "worker.queues queues=imports,imprts" in text_
    assert ("worker.queue_undeclared queue=imprts declared=imports,mail: submits to it are refused until "
            "`tenure queue set imprts` declares it") in text_
