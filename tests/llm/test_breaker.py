"""CircuitBreaker on its own, with a clock the test moves."""

from __future__ import annotations

import pytest

from utimesh.llm import LLMCircuitOpen, LLMUnavailable
from utimesh.llm.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state_of(breaker: CircuitBreaker) -> BreakerState:
    # A call, not the property: mypy would otherwise keep its first narrowing for the test.
    return breaker.state


def failed_calls(breaker: CircuitBreaker, count: int) -> None:
    for _ in range(count):
        breaker.before_call()
        breaker.on_failure()


def test_opens_after_threshold_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(threshold=3, reset_s=10.0, clock=FakeClock())
    failed_calls(breaker, 2)
    breaker.before_call()
    breaker.on_success()  # a success in between resets the count
    failed_calls(breaker, 2)
    assert state_of(breaker) is BreakerState.CLOSED
    failed_calls(breaker, 1)
    assert state_of(breaker) is BreakerState.OPEN
    with pytest.raises(LLMCircuitOpen) as raised:
        breaker.before_call()
    assert raised.value.reason == "LLM_CIRCUIT_OPEN"
    assert isinstance(raised.value, LLMUnavailable)  # callers that degrade on unavailable still do


def test_half_open_admits_one_trial_then_closes_on_success() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, reset_s=10.0, clock=clock)
    failed_calls(breaker, 1)
    clock.now += 9.9
    assert state_of(breaker) is BreakerState.OPEN
    clock.now += 0.1
    assert state_of(breaker) is BreakerState.HALF_OPEN
    breaker.before_call()  # the trial
    with pytest.raises(LLMCircuitOpen):
        breaker.before_call()  # a second caller while the trial runs
    breaker.on_success()
    assert state_of(breaker) is BreakerState.CLOSED
    breaker.before_call()


def test_failed_trial_reopens_for_another_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, reset_s=5.0, clock=clock)
    failed_calls(breaker, 2)
    clock.now += 5.0
    failed_calls(breaker, 1)  # the trial fails
    assert state_of(breaker) is BreakerState.OPEN
    clock.now += 4.0
    with pytest.raises(LLMCircuitOpen):
        breaker.before_call()
    clock.now += 1.0
    breaker.before_call()


def test_abandoned_trial_frees_the_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, reset_s=1.0, clock=clock)
    failed_calls(breaker, 1)
    clock.now += 1.0
    breaker.before_call()
    breaker.on_abandon()  # e.g. the caller was cancelled
    assert state_of(breaker) is BreakerState.HALF_OPEN
    breaker.before_call()


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(threshold=0, reset_s=1.0)
    with pytest.raises(ValueError, match="reset_s"):
        CircuitBreaker(threshold=1, reset_s=0.0)
