"""The `tenure` command's time: `submit --at/--in`, and `schedules` / `schedule add|show|pause|resume|delete|fire`.

Run as a person would, through ``main()`` with its output captured, on a real SQLite file and,
where it says so, on PostgreSQL too. A slot's firing is driven by ``fire_due_schedules(now)``
with a ``now`` past the slot, not by waiting for the clock.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import service
from service.faces import summary
from service.faces.cli import main
from service.faces.cli_schedules import SCHEDULES_COLUMNS
from service.storage.views import RunView


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, message: str) -> None:
    assert err.count("\n") == 1 and err.startswith("tenure: error: "), err
    assert message in err, err


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# -- submit --at / --in ----------------------------------------------------------------------

def test_submit_in_holds_the_run_back_and_says_until_when(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = utc_now()
    code, out, err = run_cli(capsys, "submit", "--db", db_url, "--tasks", "2", "--kind", "echo", "--in", "5m")
    after = utc_now()
    assert (code, err) == (0, "")
    first, last = out.splitlines()
    t = service.open(db_url, migrate=False)
    try:
        run = t.run(int(last))
        tasks = t.run_with_tasks(run.id)[1]
    finally:
        t.close()
    assert run.scheduled_for is not None
    assert before + timedelta(seconds=299) <= run.scheduled_for <= after + timedelta(seconds=301)
    assert all(task.scheduled_for == run.scheduled_for for task in tasks)
    at = run.scheduled_for.strftime("%H:%M:%S" if run.scheduled_for.second else "%H:%M")
    if run.scheduled_for.date() != before.date():
        at = f"{run.scheduled_for:%Y-%m-%d} {at}"
    assert first in (f"submitted run {run.id}: 2 echo tasks, scheduled for {at} UTC (in {m} min)" for m in (4, 5))


def test_submit_at_a_time_with_its_offset_starts_then_in_utc(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    berlin = (datetime.now(ZoneInfo("Europe/Berlin")) + timedelta(days=3)).replace(hour=2, minute=0, second=0,
                                                                                    microsecond=0)
    code, out, _ = run_cli(capsys, "submit", "--db", db, "--tasks", "1", "--kind", "echo", "--at", berlin.isoformat())
    in_utc = berlin.astimezone(UTC).replace(tzinfo=None)
    assert code == 0 and out.splitlines()[0].startswith(f"submitted run 1: 1 echo task, scheduled for "
                                                        f"{in_utc:%Y-%m-%d %H:%M} UTC (in ")
    t = service.open(db, migrate=False)
    try:
        assert t.run(1).scheduled_for == in_utc
    finally:
        t.close()
    z = (datetime.now(UTC) + timedelta(hours=5)).replace(microsecond=0)
    code, out, _ = run_cli(capsys, "submit", "--db", db, "--tasks", "1", "--kind", "echo",
                           "--at", z.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert code == 0 and "(in 5 h)" in out.splitlines()[0]


def test_without_at_or_in_a_run_starts_at_once_and_says_nothing_of_time(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    code, out, _ = run_cli(capsys, "submit", "--db", db, "--tasks", "1", "--kind", "echo")
    assert code == 0 and out.splitlines() == ["submitted run 1: 1 echo task", "1"]
    t = service.open(db, migrate=False)
    try:
        assert t.run(1).scheduled_for is None
    finally:
        t.close()


FAR = (datetime.now(UTC) + timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--at", "2026-12-04T02:00:00"], "--at 2026-12-04T02:00:00 has no time zone; add one"),
        (["--at", "tomorrow"], "--at 'tomorrow' is not an RFC 3339 time"),
        (["--at", FAR], "is more than a year away; the furthest start is 366 days ahead"),
        (["--in", "soon"], "--in 'soon' is not a duration; write it like 30d, 12h or 90m"),
        (["--in", "0"], "--in '0' is not a duration"),
        (["--in", "400d"], "--in 400d is more than a year; the furthest start is 366 days ahead"),
        (["--in", "5m", "--at", "2026-12-04T02:00:00Z"], "give --at or --in, not both"),
    ],
)
def test_a_bad_start_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    argv: list[str], message: str) -> None:
    db = tmp_path / "t.db"
    code, out, err = run_cli(capsys, "submit", "--db", str(db), "--tasks", "1", "--kind", "echo", *argv)
    assert (code, out) == (2, "")
    one_error_line(err, message)
    assert not db.exists()


# -- watch and summaries of a run that starts later ---------------------------------------------

def _run(counts: dict[str, int], scheduled_for: datetime | None, status: str = "running",
         finished: datetime | None = None) -> RunView:
    created = datetime(2026, 12, 3, 14, 0, 0)
    return RunView(7, None, status, "echo", sum(counts.values()), {}, None, None, created, finished, counts,
                   scheduled_for)


def test_watch_says_when_a_run_that_waits_for_its_start_starts() -> None:
    from service.faces.cli import watch_detail

    start = datetime(2026, 12, 3, 14, 5, 0)
    waiting = _run({"queued": 4}, start)
    now = start - timedelta(minutes=3)
    p = summary.progress_of(waiting, [], now)
    assert watch_detail(waiting, p, None, 1, now) == "✓ 0  ✗ 0  ▶ 0  ↻ 0  · scheduled for 14:05 UTC (in 3 min)"
    assert p.elapsed_s == 0.0 and p.eta_s is None  # it has not been slow: it has not started
    # Once its time has come it is an ordinary run: what it waits for, or its time so far.
    later = start + timedelta(seconds=20)
    assert watch_detail(waiting, summary.progress_of(waiting, [], later), 0, 1, later) == (
        "✓ 0  ✗ 0  ▶ 0  ↻ 0  · 20s elapsed  · waiting for a free slot: next in line")
    # Ended before its time (cancelled): how it ended, not a start that will never come.
    cancelled = _run({"cancelled": 4}, start, "cancelled", finished=now)
    assert "scheduled" not in watch_detail(cancelled, summary.progress_of(cancelled, [], now), None, 1, now)


def test_watch_of_a_run_that_starts_later_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "submit", "--db", db, "--tasks", "2", "--kind", "echo", "--in", "2h")[0] == 0

    def ctrl_c(_seconds: float) -> None:
        raise KeyboardInterrupt  # stop watching after the first refresh

    monkeypatch.setattr("service.faces.cli.time", types.SimpleNamespace(sleep=ctrl_c))
    code, out, _ = run_cli(capsys, "watch", "1", "--db", db)
    assert code == 130 and "scheduled for" in out and "(in 2 h)" in out and "elapsed" not in out


# -- schedule add, schedules, show, pause, resume, delete ----------------------------------------

def test_a_schedule_from_add_to_delete(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "schedule", "add", "nightly", "0 2 * * *", "--tz", "Europe/Berlin",
                             "--task", "echo", "--args", '{"path": "/data"}', "--db", db_url)
    assert (code, err) == (0, "")
    assert out.startswith("added schedule nightly: At 02:00 every day, Europe/Berlin; next fire ")
    assert " CET (in " in out or " CEST (in " in out

    code, out, _ = run_cli(capsys, "schedules", "--db", db_url)  # piped: tab-separated
    header, row = out.splitlines()
    cells = row.split("\t")
    assert header.split("\t") == list(SCHEDULES_COLUMNS) and code == 0
    assert cells[:4] == ["nightly", "0 2 * * *", "Europe/Berlin", "At 02:00 every day, Europe/Berlin"]
    nxt = datetime.fromisoformat(cells[4])
    assert nxt.utcoffset() in (timedelta(hours=1), timedelta(hours=2)) and (nxt.hour, nxt.minute) == (2, 0)
    assert cells[5:] == ["", "", ""]  # not paused, never fired

    code, out, _ = run_cli(capsys, "schedule", "show", "nightly", "--db", db_url)
    assert code == 0 and 'one echo task, args {"path":"/data"}' in out and "state      active" in out
    assert "catch-up latest, overlap skip, grace 30s" in out and out.rstrip().endswith("no fires yet")

    code, out, _ = run_cli(capsys, "schedule", "pause", "nightly", "--db", db_url)
    assert (code, out) == (0, "paused schedule nightly: nothing fires until `tenure schedule resume nightly`\n")
    assert run_cli(capsys, "schedules", "--db", db_url)[1].splitlines()[1].split("\t")[4:6] == ["", "paused"]
    assert "state      paused" in run_cli(capsys, "schedule", "show", "nightly", "--db", db_url)[1]

    code, out, _ = run_cli(capsys, "schedule", "resume", "nightly", "--db", db_url)
    assert code == 0 and out.startswith("resumed schedule nightly: next fire ")
    assert run_cli(capsys, "schedules", "--db", db_url)[1].splitlines()[1].split("\t")[5] == ""

    code, out, _ = run_cli(capsys, "schedule", "delete", "nightly", "--db", db_url)
    assert code == 0 and out == "deleted schedule nightly and its fire history; the runs and tasks it started stay\n"
    code, out, err = run_cli(capsys, "schedules", "--db", db_url)
    assert out.splitlines() == ["\t".join(SCHEDULES_COLUMNS)] and "no schedules yet" in err


def test_schedule_fire_creates_a_run_and_show_lists_the_fire(db_url: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"path": "a.csv"}\n\n{"path": "b.csv"}\n')
    assert run_cli(capsys, "schedule", "add", "convert", "0 3 * * *", "--run", "echo", "--tasks", str(tasks),
                   "--run-name", "nightly convert", "--overlap", "allow", "--db", db_url)[0] == 0
    code, out, err = run_cli(capsys, "schedule", "fire", "convert", "--db", db_url)
    assert (code, err) == (0, "")
    line, run_id = out.splitlines()
    assert line == f"fired schedule convert by hand: run {run_id} (tenure watch {run_id})"
    t = service.open(db_url, migrate=False)
    try:
        run, made = t.run_with_tasks(int(run_id))
    finally:
        t.close()
    assert (run.kind, run.total, run.name) == ("echo", 2, "nightly convert")
    assert [task.args for task in made] == [{"path": "a.csv"}, {"path": "b.csv"}]

    code, out, _ = run_cli(capsys, "schedule", "show", "convert", "--db", db_url)
    assert code == 0 and "a run of 2 echo tasks, named 'nightly convert'" in out
    assert "latest fires, newest first:" in out and f"fired by hand: run {run_id} running" in out
    last = run_cli(capsys, "schedules", "--db", db_url)[1].splitlines()[1].split("\t")
    assert last[7] == f"fired by hand: run {run_id} running"


def test_a_simulation_schedule_takes_its_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    code, _, err = run_cli(capsys, "schedule", "add", "sim", "*/10 * * * * *", "--run", "sleep", "--count", "3",
                           "--param", "min_seconds=1", "--param", "max_seconds=2", "--param", "failure_rate=0",
                           "--db", db)
    assert (code, err) == (0, "")
    _, run_id = run_cli(capsys, "schedule", "fire", "sim", "--db", db)[1].splitlines()
    t = service.open(db, migrate=False)
    try:
        run = t.run(int(run_id))
    finally:
        t.close()
    assert run.total == 3 and run.params["min_seconds"] == 1 and run.params["max_seconds"] == 2


def test_slots_fired_on_time_show_in_schedules_in_the_zone(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "schedule", "add", "report", "30 2 * * *", "--tz", "Asia/Kolkata", "--task", "echo",
                   "--db", db)[0] == 0
    t = service.open(db, migrate=False)
    try:
        slot = t.schedule("report").next_slot_at
        assert slot is not None
        fired = t.fire_due_schedules(now=slot + timedelta(seconds=1))  # as a supervisor does at the slot
    finally:
        t.close()
    assert [f.outcome for f in fired] == ["fired"]
    last = run_cli(capsys, "schedules", "--db", db)[1].splitlines()[1].split("\t")
    assert last[6] == slot.replace(tzinfo=UTC).astimezone(ZoneInfo("Asia/Kolkata")).isoformat()
    assert last[6].endswith("T02:30:00+05:30") and last[7] == f"fired: task {fired[0].task_id} queued"

    # On a terminal: a table, times in the schedule's zone with its abbreviation.
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((200, 50)))
    code, out, _ = run_cli(capsys, "schedules", "--db", db)
    assert code == 0 and "tenure schedules" in out
    line = next(line for line in out.splitlines() if "report" in line)
    assert "At 02:30 every day, Asia/Kolkata" in line and "02:30 IST (in " in line
    assert f"02:30 IST: fired: task {fired[0].task_id} queued" in line


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["0 2 * *", "--task", "echo"], "cron '0 2 * *' is not a valid expression"),
        (["0 0 30 2 *", "--task", "echo"], "cron '0 0 30 2 *'"),
        (["0 2 * * *", "--tz", "Mars/Olympus", "--task", "echo"], "--tz 'Mars/Olympus' is not a time zone"),
        (["0 2 * * *", "--task", "nope"], "unknown task kind 'nope'"),
        (["0 2 * * *", "--task", "echo", "--args", "{oops"], "--args is not JSON"),
        (["0 2 * * *", "--task", "echo", "--args", "[1]"], "args must be a JSON object"),
        (["0 2 * * *", "--task", "echo", "--count", "3"], "--count goes with --run; a --task takes --args"),
        (["0 2 * * *", "--run", "echo"], "--run needs its tasks: --tasks FILE"),
        (["0 2 * * *", "--run", "echo", "--count", "2", "--args", "{}"], "--args goes with --task"),
        (["0 2 * * *", "--run", "sleep", "--count", "2", "--param", "min_seconds"], "--param takes KEY=VALUE"),
        (["0 2 * * *", "--run", "sleep", "--count", "0"], "a run needs between 1 and 100,000 tasks"),
        (["0 2 * * *", "--run", "echo", "--tasks", "/nonexistent/t.jsonl"], "cannot read --tasks /nonexistent"),
        (["0 2 * * *", "--task", "echo", "--catch-up", "some"], "--catch-up must be one of none, latest, all"),
        (["0 2 * * *", "--task", "echo", "--catch-up-max", "0"], "--catch-up-max must be a whole number from 1"),
        (["0 2 * * *", "--task", "echo", "--overlap", "merge"], "--overlap must be one of skip, allow, queue"),
        (["0 2 * * *", "--task", "echo", "--grace", "soon"], "--grace 'soon' is not a duration"),
        (["0 2 * * *", "--task", "echo", "--grace", "2d"], "--grace must be a number of seconds above 0"),
    ],
)
def test_a_bad_schedule_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       argv: list[str], message: str) -> None:
    db = tmp_path / "t.db"
    code, out, err = run_cli(capsys, "schedule", "add", "nightly", *argv, "--db", str(db))
    assert (code, out) == (2, "")
    one_error_line(err, message)
    assert not db.exists()


def test_a_bad_line_of_a_tasks_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"path": "a"}\n\n{"args": {"path": "b"}, "colour": "red"}\n')
    code, _, err = run_cli(capsys, "schedule", "add", "x", "@daily", "--run", "echo", "--tasks", str(tasks),
                           "--db", str(tmp_path / "t.db"))
    assert code == 2
    one_error_line(err, f"{tasks} line 3: unknown field 'colour'")


@pytest.mark.parametrize("action", ["show", "pause", "resume", "delete", "fire"])
def test_an_unknown_schedule_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str) -> None:
    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "schedule", "add", "nightly", "@daily", "--task", "echo", "--db", db)[0] == 0
    code, out, err = run_cli(capsys, "schedule", action, "nighlty", "--db", db)
    assert (code, out) == (2, "")
    assert err == "tenure: error: there is no schedule named 'nighlty'; `tenure schedules` lists them\n"


def test_a_taken_name_is_refused_and_the_first_schedule_stays(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "schedule", "add", "nightly", "0 2 * * *", "--task", "echo", "--db", db)[0] == 0
    code, out, err = run_cli(capsys, "schedule", "add", "nightly", "0 5 * * *", "--task", "echo", "--db", db)
    assert (code, out) == (1, "")
    one_error_line(err, "a schedule named 'nightly' exists already")
    assert run_cli(capsys, "schedules", "--db", db)[1].splitlines()[1].split("\t")[1] == "0 2 * * *"


def test_schedule_without_an_action_and_schedules_without_a_database(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "schedule")
    assert code == 2 and out == "" and "add" in err and "fire" in err
    db = tmp_path / "none.db"
    code, _, err = run_cli(capsys, "schedules", "--db", str(db))
    assert code != 0 and "there is no database at" in err and not db.exists()


def test_tasks_of_a_schedule_can_come_from_standard_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "t.db")
    monkeypatch.setattr("sys.stdin", io.StringIO('{"n": 1}\n{"n": 2}\n{"n": 3}\n'))
    assert run_cli(capsys, "schedule", "add", "s", "@hourly", "--run", "echo", "--tasks", "-", "--db", db)[0] == 0
    assert "a run of 3 echo tasks" in run_cli(capsys, "schedule", "show", "s", "--db", db)[1]


def test_a_skipped_slot_says_why_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    assert run_cli(capsys, "schedule", "add", "often", "*/10 * * * * *", "--task", "echo", "--db", db)[0] == 0
    t = service.open(db, migrate=False)
    try:
        slot = t.schedule("often").next_slot_at
        assert slot is not None
        t.fire_due_schedules(now=slot + timedelta(seconds=1))  # its task is queued: no worker runs it
        skipped = t.fire_due_schedules(now=slot + timedelta(seconds=11))
    finally:
        t.close()
    assert [f.outcome for f in skipped] == ["skipped"]
    out = run_cli(capsys, "schedule", "show", "often", "--db", db)[1]
    newest = out.split("latest fires, newest first:\n")[1].splitlines()[0]
    assert "skipped: the task of the slot at" in newest and "had not ended" in newest
    assert "skipped: skipped" not in newest
