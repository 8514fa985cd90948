import math
import re

import pytest

from service.errors import InvalidInput, PermanentError, TransientError
from service.task_process.kinds import fake, sleep
from service.task_process.protocol import TaskContext, get_kind


def ctx(saved: object = None, position: int = 0) -> TaskContext:
    return TaskContext(task_id=1, attempt=1, run_id=1, position=position, saved=saved)


def sleep_args(**overrides: object) -> dict:
    params = sleep.validate({"min_seconds": 0.05, "max_seconds": 0.1, "failure_rate": 0.0,
                             "transient_rate": 0.0, "seed": 5, **overrides})
    return {**params, "position": 3}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_seconds": -1}, "min_seconds must be at least 0, got -1"),
        ({"min_seconds": math.nan}, "min_seconds must be a finite number"),
        ({"max_seconds": math.inf}, "max_seconds must be a finite number"),
        ({"max_seconds": 86_401}, "max_seconds must be at most 86400"),
        ({"failure_rate": 1.5}, "failure_rate must be at most 1, got 1.5"),
        ({"min_seconds": "3"}, "min_seconds must be a number, got '3'"),
        ({"seed": -4}, "seed must be at least 0"),
        ({"seed": 2.5}, "seed must be a whole number"),
        ({"colour": "red"}, "sleep does not take 'colour'; it takes failure_rate, max_seconds"),
    ],
)
def test_sleep_rejects_bad_parameters(params: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        sleep.validate(params)


def test_sleep_takes_any_values_in_range_together() -> None:
    """No pair of in-range values is refused: what the API's schema says is what it accepts."""
    args = {**sleep.validate({"min_seconds": 5, "max_seconds": 1, "failure_rate": 0.6, "transient_rate": 0.6}),
            "position": 0}
    plans = [sleep.plan({**args, "position": i}) for i in range(200)]
    assert all(1.0 <= pl.duration_s <= 5.0 for pl in plans)  # either order bounds the durations
    fates = [pl.fate for pl in plans]
    # 60 % fail for good; 60 % of the other 40 % stumble once: about 24 %.
    assert 0.45 < fates.count("fail") / 200 < 0.75 and 0.12 < fates.count("transient") / 200 < 0.36


def test_sleep_draws_and_keeps_a_seed() -> None:
    params = sleep.validate({})
    assert isinstance(params["seed"], int)
    assert params["min_seconds"] == 30.0 and params["max_seconds"] == 120.0


def test_sleep_plan_derives_from_seed_and_position_only() -> None:
    args = {"min_seconds": 30.0, "max_seconds": 120.0, "failure_rate": 0.3, "transient_rate": 0.3, "seed": 9}
    plans = [sleep.plan({**args, "position": i}) for i in range(50)]
    assert plans == [sleep.plan({**args, "position": i}) for i in range(50)]
    assert all(30.0 <= pl.duration_s <= 120.0 for pl in plans)
    fates = {pl.fate for pl in plans}
    assert fates == {"ok", "fail", "transient"}


def test_sleep_reports_progress_and_returns() -> None:
    c = ctx()
    result = sleep.Sleep(sleep_args(), c).run()
    _, progress, saved = c.snapshot()
    assert progress == 1.0
    assert result["slept_s"] == pytest.approx(saved["elapsed_s"], abs=0.01)


def test_sleep_resumes_from_its_checkpoint() -> None:
    args = sleep_args(min_seconds=1000.0, max_seconds=1000.0)
    # A previous attempt got to 99.99 % of a 1000 s task: this one only sleeps the rest.
    result = sleep.Sleep(args, ctx(saved={"elapsed_s": 999.99, "transient_done": False})).run()
    assert result["resumed_from_s"] == pytest.approx(999.99)


def test_sleep_permanent_and_transient_failures() -> None:
    with pytest.raises(PermanentError):
        sleep.Sleep(sleep_args(failure_rate=1.0), ctx()).run()
    c = ctx()
    with pytest.raises(TransientError):
        sleep.Sleep(sleep_args(transient_rate=1.0), c).run()
    # The retry gets the checkpoint saying the transient failure happened: it succeeds.
    assert sleep.Sleep(sleep_args(transient_rate=1.0), ctx(saved=c.saved)).run()["slept_s"] > 0


def test_gen_task_shapes_and_outputs() -> None:
    import random

    rng = random.Random(0)
    tasks = [fake.gen_task(v, rng=rng, time_scale=0.001) for v in range(40)]
    assert {type(t) for t in tasks} == {fake.BlockingFake, fake.PollingFake}
    assert all(0.001 <= t.seconds <= 0.099 for t in tasks)
    blocking = next(t for t in tasks if isinstance(t, fake.BlockingFake))
    assert blocking.run() == 2 * blocking.value
    polling = next(t for t in tasks if isinstance(t, fake.PollingFake))
    assert polling.run() is None


def test_polling_fake_resumes_its_handle_instead_of_starting_again() -> None:
    c = ctx()
    first = fake.PollingFake(4, seconds=1000.0, ctx=c)
    first.run()
    handle = c.saved
    assert first.check_output() is None
    # The work started 1000 s ago by the handle's clock: the next attempt finds it done.
    resumed = fake.PollingFake(4, seconds=5.0, ctx=ctx(saved={**handle, "started_at": handle["started_at"] - 1000}))
    resumed.run()
    assert resumed.check_output() == 8
    assert resumed.seconds == 1000.0


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match=r"unknown task kind 'nope'; known kinds: .*gen_task.*sleep"):
        get_kind("nope")


def test_checkpoint_must_be_json() -> None:
    with pytest.raises(TypeError):
        ctx().checkpoint({"handle": object()})


class Recording(TaskContext):
    """A context that keeps every progress report."""

    def __init__(self, saved: object = None) -> None:
        super().__init__(task_id=1, attempt=1, run_id=1, position=0, saved=saved)
        self.reports: list[float] = []

    def progress(self, fraction: float) -> None:
        self.reports.append(fraction)
        super().progress(fraction)


def test_the_blocking_fake_reports_its_progress_as_it_waits() -> None:
    c = Recording()
    assert fake.BlockingFake(21, seconds=0.05, ctx=c).run() == 42
    # Steps of 1 % of its wait (fewer on a loaded machine, whose waits overrun): rising to done.
    assert len(c.reports) >= 3 and c.reports == sorted(c.reports)
    assert c.reports[0] < 0.5 and c.reports[-1] == 1.0


def test_the_polling_fake_reports_how_much_of_its_wait_has_passed() -> None:
    c = Recording()
    # Started 250 s into its 1000 s wait: a check says a quarter, and no output yet.
    f = fake.PollingFake(4, seconds=1000.0, ctx=c)
    f.run()
    f.started_at = f.started_at - 250 if f.started_at is not None else None
    assert f.check_output() is None
    assert c.reports and 0.25 <= c.reports[-1] < 0.26
    f.started_at = (f.started_at or 0) - 750
    assert f.check_output() == 8 and c.reports[-1] == 1.0
