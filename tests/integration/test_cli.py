"""The `tenure` command: bad input is one line on stderr, a non-zero exit, and nothing written."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.faces import summary
from service.faces.cli import RUNS_COLUMNS, main
from service.storage.views import RunView
from tests.conftest import wait_for


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "0"], "a run needs between 1 and 100,000 tasks, got 0"),
        (["--tasks", "100001"], "a run needs between 1 and 100,000 tasks"),
        (["--kind", "nope"], "unknown task kind 'nope'"),
        (["--min-seconds", "-1"], "min_seconds must be at least 0, got -1"),
        (["--max-seconds", "inf"], "max_seconds must be a finite number"),
        (["--min-seconds", "nan"], "min_seconds must be a finite number"),
        (["--failure-rate", "1.2"], "failure_rate must be at most 1, got 1.2"),
        (["--transient-rate", "-0.1"], "transient_rate must be at least 0, got -0.1"),
        (["--kind", "gen_task", "--min-seconds", "3"], "gen_task does not take 'min_seconds'; it takes seed, shape"),
        (["--max-attempts", "0"], "max_attempts must be a whole number from 1 to 100"),
        (["--timeout", "-5"], "timeout_s must be a positive number"),
        (["--on-complete", "nope"], "unknown task kind 'nope'"),
    ],
)
def test_bad_submit_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                   message: str) -> None:
    db = tmp_path / "t.db"
    code, out, err = run_cli(capsys, "submit", "--db", str(db), *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("tenure: error: ") and message in err
    assert out == ""
    assert not db.exists()


def test_unknown_run_and_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    code, _, err = run_cli(capsys, "runs", "--db", str(db))
    assert code != 0 and "there is no database at" in err and not db.exists()
    assert run_cli(capsys, "migrate", "--db", str(db))[0] == 0
    code, _, err = run_cli(capsys, "watch", "42", "--db", str(db))
    assert code == 2 and err == "tenure: error: there is no run 42\n"


def test_foreign_and_newer_databases_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 migrated_template: Path) -> None:
    import sqlite3

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER)")
    conn.close()
    code, _, err = run_cli(capsys, "submit", "--db", str(foreign), "--tasks", "1")
    assert code == 2 and "is not a tenure database" in err and err.count("\n") == 1

    newer = tmp_path / "newer.db"
    newer.write_bytes(migrated_template.read_bytes())
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'zz_future'")
    conn.close()
    code, _, err = run_cli(capsys, "submit", "--db", str(newer), "--tasks", "1")
    assert code == 2 and "which this tenure does not know" in err
    with sqlite3.connect(newer) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    conn.close()


def test_submit_prints_the_run_id_last_and_runs_lists_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENURE_DB", str(tmp_path / "env.db"))
    code, out, _ = run_cli(capsys, "submit", "--tasks", "3", "--name", "nightly", "--seed", "1")
    assert code == 0 and out.split()[-1] == "1"
    code, out, _ = run_cli(capsys, "submit", "--tasks", "2", "--kind", "gen_task", "--time-scale", "0.01")
    assert code == 0 and out.split()[-1] == "2"
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and "nightly" in out and "gen_task" in out


def test_python_dash_m_service_is_the_same_command(tmp_path: Path) -> None:
    from tests.acceptance.procs import tenure

    done = tenure("submit", "--tasks", "1", "--kind", "nope", db=tmp_path / "x.db", check=False)
    assert done.returncode == 2 and done.stderr.strip() == (
        "tenure: error: unknown task kind 'nope'; known kinds: echo, gen_task, sleep")


def test_submit_a_run_of_your_own_tasks_from_a_jsonl_file_or_stdin(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import service

    db = tmp_path / "t.db"
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"path": "/data/a.csv"}\n\n'
                     '{"args": {"path": "/data/b.csv"}, "label": "big", "max_attempts": 5}\n')
    code, out, err = run_cli(capsys, "submit", "--db", str(db), "--kind", "echo", "--tasks-file", str(tasks),
                             "--name", "convert", "--idempotency-key", "convert-1")
    assert (code, err) == (0, "") and out.splitlines() == ["submitted run 1: 2 echo tasks", "1"]
    code, out, _ = run_cli(capsys, "submit", "--db", str(db), "--kind", "echo", "--tasks-file", str(tasks),
                           "--name", "convert", "--idempotency-key", "convert-1")
    assert code == 0 and out.splitlines() == ["submitted run 1: 2 echo tasks (made earlier with this idempotency key)",
                                              "1"]
    monkeypatch.setattr("sys.stdin", io.StringIO('{"n": 1}\n{"n": 2}\n{"n": 3}\n'))
    code, out, _ = run_cli(capsys, "submit", "--db", str(db), "--kind", "echo", "--tasks-file", "-")
    assert code == 0 and out.split()[-1] == "2"
    t = service.open(str(db), migrate=False)
    try:
        _, first = t.run_with_tasks(1)
        assert [(x.args, x.label, x.max_attempts) for x in first] == [
            ({"path": "/data/a.csv"}, "a.csv", 3), ({"path": "/data/b.csv"}, "big", 5)]
        assert [x.args for x in t.run_with_tasks(2)[1]] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert t.store.count_runs() == 2
    finally:
        t.close()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('{"a": 1}\n{"a": \n', "line 2 is not JSON"),
        ('{"a": 1}\n\n[1, 2]\n', "line 3: a task must be a JSON object"),
        ('{"args": 5}\n', "line 1: args must be a JSON object"),
        ('{"args": {}, "kind": "nope"}\n', "line 1: unknown task kind 'nope'"),
        ('{"a": 1}\n{"path": "a\\u0000.csv"}\n', "line 2: args.path contains a NUL character"),
        ("\n\n", "has no tasks"),
    ],
)
def test_a_bad_tasks_file_names_its_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: str, message: str) -> None:
    db, tasks = tmp_path / "t.db", tmp_path / "tasks.jsonl"
    tasks.write_text(lines)
    code, out, err = run_cli(capsys, "submit", "--db", str(db), "--kind", "echo", "--tasks-file", str(tasks))
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert not db.exists()


def test_a_tasks_file_goes_with_no_simulation_flags_and_must_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    code, _, err = run_cli(capsys, "submit", "--db", str(db), "--tasks-file", str(tmp_path / "none.jsonl"))
    assert code == 2 and "cannot read --tasks-file" in err and "No such file" in err
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    code, _, err = run_cli(capsys, "submit", "--db", str(db), "--tasks-file", str(tmp_path / "x.jsonl"), "--tasks", "3")
    assert code == 2 and "--tasks and the simulation flags do not go with it" in err
    assert not db.exists()


def test_prune_reports_what_it_deleted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "submit", "--db", db, "--tasks", "2", "--kind", "echo")[0] == 0
    code, out, _ = run_cli(capsys, "prune", "--db", db, "--older-than", "30d")
    assert code == 0 and out.startswith("pruned 0 runs, 0 tasks, 0 attempts and 0 supervisors that ended over 30d ago")
    code, _, err = run_cli(capsys, "prune", "--db", db, "--older-than", "soon")
    assert code == 2 and err == "tenure: error: --older-than 'soon' is not a duration; write it like 30d, 12h or 90m\n"


def test_counts_of_one_are_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from rich.console import Console

    from service.faces.cli import _print_summary

    db = str(tmp_path / "t.db")
    code, out, _ = run_cli(capsys, "submit", "--db", db, "--tasks", "1", "--kind", "echo")
    assert code == 0 and out.splitlines()[0] == "submitted run 1: 1 echo task"

    def printed(ended: summary.Summary) -> list[str]:
        console = Console(file=io.StringIO(), width=200)
        now = datetime.now(UTC)
        _print_summary(console, RunView(1, None, "completed", "echo", 1, {}, None, None, now, now), ended)
        return console.file.getvalue().splitlines()  # type: ignore[attr-defined]

    ended = summary.Summary(succeeded=1, failed=0, cancelled=0, failures=[], retries=1, recovered=1, released=1,
                            crashed=0, duration_s=3.0, slowest=[])
    assert printed(ended)[1] == ("  1 retry after a failure; 1 attempt re-run after a crash, none charged; "
                                 "1 handed over at a restart, none charged")
    assert printed(dataclasses.replace(ended, retries=2, recovered=2))[1].startswith(
        "  2 retries after a failure; 2 attempts re-run after a crash")


def _run_view(status: str, counts: dict[str, int], seconds: float) -> RunView:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    finished = created + timedelta(seconds=seconds) if status != "running" else None
    return RunView(7, None, status, "gen_task", sum(counts.values()), {}, None, None, created, finished, counts)


def test_watch_says_time_left_only_when_it_has_an_estimate() -> None:
    from service.faces.cli import watch_detail

    live = _run_view("running", {"succeeded": 1, "failed": 0, "running": 1, "retrying": 0, "queued": 2}, 0)
    now = live.created_at + timedelta(seconds=20)
    estimated = summary.progress_of(live, [(0.5, live.created_at)], now)
    assert estimated.eta_s is not None
    assert watch_detail(live, estimated) == "✓ 1  ✗ 0  ▶ 1  ↻ 0  · 20s elapsed  · about 33s left"
    # All that is left is running, and its task has said nothing of its progress (gen_task): no estimate.
    last = _run_view("running", {"succeeded": 1, "failed": 0, "running": 1, "retrying": 0, "queued": 0}, 0)
    unknown = summary.progress_of(last, [(0.0, last.created_at)], now)
    assert unknown.eta_s is None
    assert watch_detail(last, unknown) == "✓ 1  ✗ 0  ▶ 1  ↻ 0  · 20s elapsed"
    # Nothing of it runs: it says what it waits for instead of an estimate.
    queued = _run_view("running", {"succeeded": 0, "failed": 0, "running": 0, "retrying": 0, "queued": 4}, 0)
    waiting = summary.progress_of(queued, [], now)
    assert watch_detail(queued, waiting, 7) == ("✓ 0  ✗ 0  ▶ 0  ↻ 0  · 20s elapsed"
                                                "  · waiting for a free slot: 7 tasks ahead")
    assert watch_detail(queued, waiting, 0).endswith("· waiting for a free slot: next in line")

    ended = _run_view("completed", {"succeeded": 3, "failed": 1}, 42)
    assert watch_detail(ended, summary.progress_of(ended, [], now + timedelta(hours=1))) == (
        "✓ 3  ✗ 1  ▶ 0  ↻ 0  · completed in 42s")


def test_watch_of_a_finished_run_shows_its_time_and_no_dash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import service

    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "submit", "--db", db, "--tasks", "2", "--kind", "echo")[0] == 0
    t = service.open(db, migrate=False)
    sup = t.start_supervisor(heartbeat_s=0.05, lease_ttl_s=5.0)
    try:
        wait_for(lambda: not t.run(1).live, 10, "the run to end")
    finally:
        assert sup.stop(grace_s=0.0, timeout_s=5)
        t.close()
    code, out, _ = run_cli(capsys, "watch", "1", "--db", db)
    assert code == 0 and "completed in" in out and "run 1 completed in" in out
    assert "—" not in out and "left" not in out


def test_ctrl_c_in_watch_says_the_run_carries_on(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "submit", "--db", db, "--tasks", "2", "--kind", "echo")[0] == 0  # no worker: it stays live

    def ctrl_c(_seconds: float) -> None:
        raise KeyboardInterrupt  # what Ctrl-C raises in the main thread, here in watch's pause between refreshes

    monkeypatch.setattr("service.faces.cli.time", types.SimpleNamespace(sleep=ctrl_c))
    code, _, err = run_cli(capsys, "watch", "1", "--db", db)
    assert code == 130
    assert err == "stopped watching; run 1 carries on (tenure watch 1 to look again)\n"


LONG_NAME = "nightly-reindex-of-the-customer-archive-" * 3  # 120 characters: past 80 columns on its own


def test_runs_piped_is_one_tab_separated_line_per_run_never_cut(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "migrate", "--db", db)[0] == 0
    code, out, err = run_cli(capsys, "runs", "--db", db)
    assert (code, out.splitlines(), err) == (0, ["\t".join(RUNS_COLUMNS)], "no runs yet: `tenure submit` starts one\n")
    assert run_cli(capsys, "submit", "--db", db, "--tasks", "2", "--kind", "echo", "--name", LONG_NAME)[0] == 0
    assert run_cli(capsys, "submit", "--db", db, "--tasks", "1", "--kind", "echo", "--name", "two\tparts")[0] == 0
    code, out, _ = run_cli(capsys, "runs", "--db", db)
    header, *lines = out.splitlines()
    assert code == 0 and header.split("\t") == list(RUNS_COLUMNS) and len(lines) == 2
    latest, first = (line.split("\t") for line in lines)
    assert latest[:7] == ["2", "two parts", "echo", "running", "1", "0", "0"] and latest[8] == ""
    assert first[:5] == ["1", LONG_NAME, "echo", "running", "2"]
    datetime.strptime(first[7], "%Y-%m-%d %H:%M:%S")


def test_runs_on_a_terminal_is_a_table_as_wide_as_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import shutil
    import sys

    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "submit", "--db", db, "--tasks", "2", "--kind", "echo", "--name", LONG_NAME)[0] == 0
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((220, 50)))
    code, out, _ = run_cli(capsys, "runs", "--db", db)
    assert code == 0 and "tenure runs, latest first" in out
    assert any(LONG_NAME in line and "running" in line for line in out.splitlines()), out


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_an_idle_worker_stops_at_once_not_after_its_grace(tmp_path: Path, how: str) -> None:
    """With nothing running, a graceful stop has nothing to wait for: the worker exits well
    before its grace (30 s here) would have run out, with code 0."""
    import os
    import signal
    import subprocess
    import sys

    from tests.acceptance.procs import REPO

    db, log = tmp_path / "t.db", tmp_path / "worker.log"
    assert main(["migrate", "--db", str(db)]) == 0
    with open(log, "wb") as out:  # a session of its own: Ctrl-C reaches its whole process group, as in a terminal
        proc = subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", str(db), "--grace", "30"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        wait_for(lambda: b"supervisor.started" in log.read_bytes() or proc.poll() is not None, 20, "the worker")
        assert proc.poll() is None, log.read_text()
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        wait_for(lambda: proc.poll() is not None, 3, "the idle worker to exit, well within its 30 s grace")
        assert proc.returncode == 0, log.read_text()
        assert "supervisor.stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
