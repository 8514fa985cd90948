"""The pool's table of kinds' shapes: one of an unknown kind goes first, the rest wait for it."""

from __future__ import annotations

from service.storage.leases import Lease
from service.supervisor.attempt import Execution
from service.supervisor.placement import Modes


def _ex(task_id: int, kind: str = "k", *, isolated: bool = False) -> Execution:
    lease = Lease(task_id=task_id, attempt=1, charged=0, lost=0, max_attempts=3, run_id=None, position=0,
                  kind=kind, args={}, checkpoint=None, timeout_s=None, isolated=isolated)
    return Execution(lease=lease, started_mono=0.0, deadline_mono=10.0)


def test_one_of_an_unknown_kind_goes_first_and_the_rest_wait_for_its_answer() -> None:
    modes = Modes()
    first, second, third = _ex(1), _ex(2), _ex(3)
    assert modes.admit(first)
    first.process = object()  # placed
    assert not modes.admit(second) and not modes.admit(third)
    assert modes.ready() == [] and modes.holding == 2
    modes.learn("k", True)
    assert modes.ready() == [second, third] and modes.holding == 0
    assert modes.on_loop(second) and not modes.on_loop(_ex(4, isolated=True))
    assert modes.admit(_ex(5)), "a known kind is placed at once"


def test_a_held_execution_can_be_stopped_and_a_probe_that_ended_untold_hands_over() -> None:
    modes = Modes()
    first, second, third = _ex(1), _ex(2), _ex(3)
    assert modes.admit(first)
    first.process = object()
    assert not modes.admit(second) and not modes.admit(third)
    assert modes.release(second) and not modes.release(second)
    first.process = None  # it ended (its build failed, say) before saying what its kind is
    assert modes.ready() == [third], "the next one goes first instead"
    assert not modes.on_loop(third)
