import random

import pytest

from service.supervisor.retry import RetryPolicy


def test_permanent_error_gives_up_at_once() -> None:
    policy = RetryPolicy(rng=random.Random(1))
    assert policy.decide(True, attempt=1, max_attempts=5).retry is False


def test_other_errors_retry_until_attempts_are_used_up() -> None:
    policy = RetryPolicy(rng=random.Random(1))
    assert policy.decide(False, 1, 3).retry
    assert policy.decide(False, 2, 3).retry
    assert not policy.decide(False, 3, 3).retry


def test_ceiling_doubles_per_attempt_and_caps() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=3.0)
    assert [policy.ceiling_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_full_jitter_spreads_delays_over_zero_to_ceiling(attempt: int) -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=60.0, rng=random.Random(42))
    ceiling = policy.ceiling_s(attempt)
    delays = [policy.decide(False, attempt, 10).delay_s for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter: the whole range is used, not a band near the ceiling.
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling
    assert 0.4 * ceiling < sum(delays) / len(delays) < 0.6 * ceiling
