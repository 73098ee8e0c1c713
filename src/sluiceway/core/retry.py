"""Retry policy for transient errors: exponential backoff with jitter, attempts and deadline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import tenacity

from sluiceway.core.errors import TransientError

__all__ = ["RetryExhaustedError", "RetryPolicy", "call_with_retry"]

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a :class:`TransientError`.

    ``attempts`` counts the first try. ``deadline`` (seconds) bounds the whole
    sequence including waits; ``None`` means attempts alone decide.
    """

    attempts: int = 5
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_delay: float = 0.5
    max_delay: float = 60.0
    jitter: float = 0.5
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry attempts must be at least 1")


class RetryExhaustedError(Exception):
    """Every attempt failed with a transient error; ``last`` is the final one."""

    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {last}")
        self.last = last
        self.attempts = attempts


def call_with_retry(
    fn: Callable[[], R],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> tuple[R, int]:
    """Call ``fn`` until it succeeds; return its result and the attempt count.

    Only :class:`TransientError` is retried; anything else propagates at once.
    Raises :class:`RetryExhaustedError` when the policy is spent.
    """
    wait: tenacity.wait.wait_base
    if policy.backoff == "fixed":
        wait = tenacity.wait_fixed(policy.initial_delay) + tenacity.wait_random(0, policy.jitter)
    else:
        wait = tenacity.wait_exponential_jitter(
            multiplier=policy.initial_delay, max=policy.max_delay, jitter=policy.jitter
        )
    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(policy.attempts)
    if policy.deadline is not None:
        stop = stop | tenacity.stop_before_delay(policy.deadline)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            assert exc is not None
            delay = state.next_action.sleep if state.next_action else 0.0
            on_retry(state.attempt_number, exc, delay)

    retrying = tenacity.Retrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception_type(TransientError),
        before_sleep=before_sleep,
        reraise=False,
        sleep=sleep or tenacity.nap.sleep,
    )
    try:
        result = retrying(fn)
    except tenacity.RetryError as exc:
        last = exc.last_attempt.exception()
        assert last is not None
        raise RetryExhaustedError(last, exc.last_attempt.attempt_number) from last
    return result, int(retrying.statistics.get("attempt_number", 1))
