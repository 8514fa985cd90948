"""The retry policy: a small pure object that decides retry-after-N-seconds or give up."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay_s: float = 0.0


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter.

    After charged attempt ``n`` (1-based: failures, timeouts and crashes of the task itself,
    never attempts lost with a supervisor) of a task allowed ``max_attempts``:

    * a permanent failure (:class:`~service.errors.PermanentError`) gives up at once;
    * otherwise, while ``n < max_attempts``, retry after
      ``delay = uniform(0, min(cap_s, base_s * 2 ** (n - 1)))`` seconds;
    * once ``n >= max_attempts``, give up.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads retries of
    tasks that failed together, so they do not come back as a herd.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def ceiling_s(self, attempt: int) -> float:
        """The largest delay the policy may pick after failed attempt ``attempt``."""
        return float(min(self.cap_s, self.base_s * 2.0 ** max(attempt - 1, 0)))

    def decide(self, permanent: bool, attempt: int, max_attempts: int) -> Decision:
        if permanent or attempt >= max_attempts:
            return Decision(retry=False)
        return Decision(retry=True, delay_s=self.rng.uniform(0.0, self.ceiling_s(attempt)))
