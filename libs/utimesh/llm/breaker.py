"""A circuit breaker for one model endpoint: after N consecutive failed calls it rejects at once
instead of making callers wait on a provider that is down, then lets one trial call through."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from utimesh.llm.types import LLMCircuitOpen


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed → open after `threshold` consecutive failures → half-open `reset_s` later, when
    exactly one trial call may run: success closes it, failure opens it for another `reset_s`.

    Not thread-safe; meant for one event loop, where the check-and-set below cannot interleave.
    """

    def __init__(
        self,
        *,
        threshold: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if reset_s <= 0:
            raise ValueError("reset_s must be positive")
        self.threshold = threshold
        self.reset_s = reset_s
        self.name = name
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def before_call(self) -> None:
        """Admit a call or raise LLMCircuitOpen. Every admitted call must end with exactly one
        of on_success, on_failure or on_abandon."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return
        assert self._opened_at is not None
        retry_in = max(0.0, self.reset_s - (self._clock() - self._opened_at))
        raise LLMCircuitOpen(
            f"circuit open for {self.name or 'the LLM endpoint'} after "
            f"{self._failures} consecutive failures; next trial in {retry_in:.1f}s",
            metadata={"retry_in_s": f"{retry_in:.1f}"},
        )

    def on_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def on_failure(self) -> None:
        self._failures += 1
        was_trial = self._trial_in_flight
        self._trial_in_flight = False
        if was_trial or self._failures >= self.threshold:
            self._opened_at = self._clock()

    def on_abandon(self) -> None:
        """The call ended with no verdict on the endpoint (cancelled, or no time to even try):
        free the trial slot without changing the count."""
        self._trial_in_flight = False
