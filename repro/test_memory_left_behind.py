"""An innocent task is charged for memory an earlier occupant of its (reused) task process left behind.

``TaskProcess.fates`` blames the attempt that hit the memory limit (the ``fatal`` message) as
``own`` (crashed, charged) whoever ran in the process before it. In a reused process the memory
may be an earlier task's: here ``r_hog`` keeps 250 MiB alive in a module-level list and succeeds;
``r_modest`` then allocates 200 MiB (half its 400 MiB limit) in the same process, fails to, and
is charged "it exceeded its memory limit of 400 MiB". Alone it succeeds. With max_attempts=1 it
fails for good. The README: "An innocent task is never charged: not ... for what an earlier
occupant of its process left behind" (a crash in a reused process is "nobody's for sure").
"""

from __future__ import annotations

import service
from repro import review_kinds  # noqa: F401  (the kinds this test runs)


def test_a_modest_task_after_a_hog_in_a_reused_process_is_not_charged(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    hog = t.submit_task("r_hog", {"mb": 250}, max_attempts=1, memory_limit_mb=400)
    modest = t.submit_task("r_modest", {"mb": 200}, max_attempts=1, memory_limit_mb=400)
    supervise(concurrency=1)
    assert t.wait_task(hog, 20).status == "succeeded"
    done = t.wait_task(modest, 20)
    attempts = [(a.outcome, a.charged, a.error) for a in t.attempts(modest)]
    print("modest task:", done.status, done.charged, attempts)
    assert done.charged == 0, attempts


def test_control_the_modest_task_alone_succeeds_under_the_same_limit(t: service.Tenure, supervise) -> None:  # type: ignore[no-untyped-def]
    modest = t.submit_task("r_modest", {"mb": 200}, max_attempts=1, memory_limit_mb=400)
    supervise(concurrency=1)
    done = t.wait_task(modest, 20)
    assert (done.status, done.charged) == ("succeeded", 0)
