"""The one retry policy for every Kubernetes API call, sync or async.

The policy is plain data (so a trigger can carry it as numbers and rebuild it in the triggerer);
`retrying()` and `async_retrying()` turn it into tenacity objects. Retried: 429 (honouring
Retry-After), 5xx, and connection-level errors. Everything else, 409 included, goes straight to
the caller, which knows what a conflict means for it (adopt on create, for instance).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

import tenacity

RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# Connection-level failures of urllib3 (sync client) and aiohttp (async client), named rather than
# imported so this module needs neither at import time.
_CONNECTION_ERRORS: Final = frozenset(
    {
        "MaxRetryError",
        "ProtocolError",
        "NewConnectionError",
        "ReadTimeoutError",
        "ClientConnectionError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ClientOSError",
        "ClientPayloadError",
        "ServerTimeoutError",
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How API calls are retried: attempts, exponential backoff bounds and an overall deadline."""

    attempts: int = 6
    backoff_min: float = 0.5
    backoff_max: float = 15.0
    deadline: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if not 0 < self.backoff_min <= self.backoff_max:
            raise ValueError("RetryPolicy needs 0 < backoff_min <= backoff_max")
        if self.deadline <= 0:
            raise ValueError("RetryPolicy.deadline must be positive")

    def within(self, seconds: float) -> RetryPolicy:
        """The same policy, giving up after at most `seconds` in all."""
        return RetryPolicy(
            attempts=self.attempts,
            backoff_min=min(self.backoff_min, max(seconds, 0.01)),
            backoff_max=min(self.backoff_max, max(seconds, 0.01)),
            deadline=max(min(self.deadline, seconds), 0.01),
        )


DEFAULT_POLICY: Final = RetryPolicy()


def status_of(error: BaseException) -> int | None:
    """The HTTP status of an API error from either client, or None for other errors."""
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt at the same call may succeed."""
    status = status_of(error)
    if status is not None:
        return status in RETRYABLE_STATUSES
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in _CONNECTION_ERRORS for cls in type(error).__mro__)


def retry_after(error: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After on a 429 or 503), if any."""
    headers: Any = getattr(error, "headers", None)
    if not headers:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None  # an HTTP date; the exponential backoff applies instead


def _wait(policy: RetryPolicy) -> Any:
    def wait(state: tenacity.RetryCallState) -> float:
        exponential = min(policy.backoff_max, policy.backoff_min * 2 ** (state.attempt_number - 1))
        error = state.outcome.exception() if state.outcome else None
        asked = retry_after(error) if error else None
        if asked is not None:
            return min(asked, policy.deadline)
        return random.uniform(policy.backoff_min, exponential)  # full jitter

    return wait


def _arguments(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "retry": tenacity.retry_if_exception(is_retryable),
        "stop": tenacity.stop_after_attempt(policy.attempts)
        | tenacity.stop_after_delay(policy.deadline),
        "wait": _wait(policy),
        "reraise": True,
    }


def retrying(policy: RetryPolicy = DEFAULT_POLICY) -> tenacity.Retrying:
    """Tenacity's Retrying for sync calls; use as `retrying(policy)(call, *args)`."""
    return tenacity.Retrying(**_arguments(policy))


def async_retrying(policy: RetryPolicy = DEFAULT_POLICY) -> tenacity.AsyncRetrying:
    """Tenacity's AsyncRetrying for async calls; `await it(call, *args)`."""
    return tenacity.AsyncRetrying(**_arguments(policy))
