"""The one retry policy: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import asyncio
import time

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

from kubedbt.io.retry import RetryPolicy, async_retrying, is_retryable, retry_after, retrying

FAST = RetryPolicy(attempts=4, backoff_min=0.01, backoff_max=0.02, deadline=5)


def _api_error(status: int, headers: dict[str, str] | None = None) -> ApiException:
    error = ApiException(status=status, reason="test")
    error.headers = headers or {}
    return error


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (_api_error(429), True),
        (_api_error(500), True),
        (_api_error(503), True),
        (_api_error(504), True),
        (_api_error(409), False),
        (_api_error(404), False),
        (_api_error(403), False),
        (_api_error(422), False),
        (AsyncApiException(status=502), True),
        (AsyncApiException(status=400), False),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (urllib3.exceptions.ProtocolError("reset"), True),
        (urllib3.exceptions.MaxRetryError(None, "/", "refused"), True),  # type: ignore[arg-type]
        (ValueError("bad"), False),
    ],
)
def test_what_is_retried(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_retry_after_is_read_from_headers() -> None:
    assert retry_after(_api_error(429, {"Retry-After": "2"})) == 2.0
    assert retry_after(_api_error(429, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})) is None
    assert retry_after(_api_error(429)) is None
    assert retry_after(ValueError()) is None


def test_transient_errors_are_retried_until_success() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _api_error(503)
        return "ok"

    assert retrying(FAST)(flaky) == "ok"
    assert len(calls) == 3


def test_conflict_goes_straight_to_the_caller() -> None:
    calls: list[int] = []

    def conflict() -> None:
        calls.append(1)
        raise _api_error(409)

    with pytest.raises(ApiException) as caught:
        retrying(FAST)(conflict)
    assert caught.value.status == 409
    assert len(calls) == 1


def test_gives_up_after_the_attempts_with_the_last_error() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise _api_error(500)

    with pytest.raises(ApiException):
        retrying(FAST)(down)
    assert len(calls) == FAST.attempts


def test_retry_after_is_honoured() -> None:
    calls: list[float] = []

    def throttled() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise _api_error(429, {"Retry-After": "1"})
        return "ok"

    assert retrying(FAST)(throttled) == "ok"
    assert calls[1] - calls[0] >= 0.95


def test_deadline_bounds_the_total_time() -> None:
    policy = RetryPolicy(attempts=1000, backoff_min=0.05, backoff_max=0.05, deadline=0.3)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        retrying(policy)(lambda: (_ for _ in ()).throw(ConnectionError()))
    assert time.monotonic() - started < 1.0


def test_within_narrows_the_deadline() -> None:
    assert RetryPolicy().within(10).deadline == 10
    assert RetryPolicy(deadline=5).within(10).deadline == 5
    assert RetryPolicy().within(-3).deadline > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"backoff_min": 0}, {"backoff_min": 2, "backoff_max": 1}, {"deadline": 0}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_async_calls_share_the_policy() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise AsyncApiException(status=500)
        return "ok"

    async def main() -> str:
        result: str = await async_retrying(FAST)(flaky)
        return result

    assert asyncio.run(main()) == "ok"
    assert len(calls) == 2
