"""Every query in the README's "Run history in SQL", run as a reader would: in sqlite3, on a
database with a finished run that had failures and retries, and one task submitted alone."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import service
from tests.acceptance.procs import REPO
from tests.conftest import wait_for
from tests.integration.conftest import FAST

TASKS = 24


def readme_queries() -> dict[str, str]:
    """The README's SQL block, as {its comment line: the statement}."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Run history in SQL"):]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block, "the README has no SQL block under Run history in SQL"
    queries = {}
    for chunk in block.group(1).split(";\n"):
        lines = [line for line in chunk.strip().splitlines() if line.strip()]
        if lines:
            assert lines[0].startswith("-- "), chunk
            queries[lines[0][3:]] = "\n".join(lines[1:])
    return queries


def test_every_readme_query_answers_on_a_real_finished_run(sqlite_url: str) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    t = service.open(sqlite_url)
    later = t.submit_task("echo", {"later": True}, label="later", delay_s=600)
    run = t.submit_run(TASKS, "sleep", {"min_seconds": 0.3, "max_seconds": 0.6, "failure_rate": 0.3,
                                        "transient_rate": 0.4, "seed": 7}, name="readme")
    t.set_queue("imports", concurrency=2)
    imported = t.submit_task("echo", {"y": 1}, queue="imports")
    alone = t.submit_task("echo", {"x": 1}, label="on its own")
    queries = readme_queries()
    assert len(queries) == 10, list(queries)
    sup = t.start_supervisor(**FAST)
    db = sqlite3.connect(path)
    try:
        wait_for(lambda: any(task.status == "running" and task.progress > 0 for task in t.run_with_tasks(run)[1]),
                 10, "a task under way")
        running = db.execute(queries["What is running right now, where, and how far along."]).fetchall()
        assert running and all(row[0] == run and 1 <= row[1] <= TASKS for row in running), running
        t.wait_run(run, 30)
        t.add_schedule("readme-nightly", "0 2 * * *", timezone="Europe/Berlin",
                       run={"kind": "echo", "tasks": [{"x": 1}]})
        by_hand = t.fire_schedule("readme-nightly")  # run 2: the README's queries of "run 1" stay the run above
        assert by_hand.run_id is not None
        t.wait_run(by_hand.run_id, 10)
        wait_for(lambda: t.task(alone).terminal and t.task(imported).terminal, 10, "the single tasks")
    finally:
        assert sup.stop(grace_s=0.0, timeout_s=5)
        t.close()
    try:
        _, tasks = service.open(sqlite_url, migrate=False).run_with_tasks(run)
        failed = [task for task in tasks if task.status == "failed"]
        assert 0 < len(failed) < TASKS

        runs = db.execute(queries["Runs, latest first, with their outcome and duration in seconds."]).fetchall()
        assert [row[0] for row in runs] == [by_hand.run_id, run]
        latest = runs[1]
        assert latest[:6] == (run, "readme", "completed", TASKS, TASKS - len(failed), len(failed)) and latest[6] > 0

        reasons = db.execute(queries["Why tasks failed, commonest reason first."]).fetchall()
        assert sum(count for _, count in reasons) == len(failed)
        assert len(reasons) < len(failed), f"errors do not group: {reasons}"
        assert all("(at" not in error for error, _ in reasons)

        rows = db.execute(queries["Per run: attempts lost to a server crash (never charged) and attempts "
                                  "that crashed their own process."]).fetchall()
        (per_run,) = [row for row in rows if row[0] == run]
        retried = sum(task.attempts > 1 for task in tasks)
        assert per_run[0] == run and per_run[1:3] == (0, 0) and per_run[3] >= len(failed) + retried

        slowest = db.execute(queries["The slowest tasks of run 1."]).fetchall()
        assert len(slowest) == 5 and [row[2] for row in slowest] == sorted((row[2] for row in slowest), reverse=True)
        assert all(1 <= tile <= TASKS and label is None for tile, label, _ in slowest)  # a simulation: no labels

        wrote = db.execute(queries["What the failed tasks of run 1 wrote last, and their tracebacks."]).fetchall()
        assert len(wrote) == len(failed)
        for _tile, _label, error, output, traceback in wrote:
            assert "giving up at" in output and error.partition(": ")[2] in output and "PermanentError" in traceback

        default, imports = db.execute(queries["Each queue: tasks waiting, attempts running against its limit, "
                                              "starts in the last minute."]).fetchall()
        assert imports == ("imports", 2, 0, 0, 0, 1), imports
        assert default[:5] == ("default", None, 0, 1, 0) and default[5] >= TASKS + 2, default  # `later` waits

        single, _, waiting = db.execute(queries["Tasks submitted on their own, latest first."]).fetchall()
        assert single[:4] == (alone, "echo", "on its own", "succeeded") and waiting[:4] == (later, "echo", "later",
                                                                                          "queued")

        (due,) = db.execute(queries["Work waiting for its start, soonest first."]).fetchall()
        assert due[:4] == (later, None, "echo", "later") and due[4] > db.execute("SELECT datetime('now')").fetchone()[0]

        (fire,) = db.execute(queries["Each schedule's latest fires: the slot, what became of it, and how its run "
                                     "ended."]).fetchall()
        assert fire == ("readme-nightly", None, "fired", 0, "fired by hand", by_hand.run_id, "completed"), fire
    finally:
        db.close()
