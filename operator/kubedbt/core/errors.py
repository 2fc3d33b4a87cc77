"""One hierarchy of errors for the whole package.

A failure is either retryable (another attempt may succeed: an eviction, a flaky warehouse) or
terminal (the same input fails the same way: a parse error, a bad parameter). The Airflow layer maps
terminal errors to AirflowFailException so Airflow does not spend retries on them.
"""

from __future__ import annotations

MAX_MESSAGE_CHARS = 2000


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Cut `text` to `limit` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"{text[:limit]}... [{dropped} more characters]"


class KubedbtError(Exception):
    """Base of every error kubedbt raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(shorten(message))


class TerminalError(KubedbtError):
    """A failure that another attempt with the same input would repeat."""

    retryable = False


class RetryableError(KubedbtError):
    """A failure that another attempt may not see."""

    retryable = True


class InvalidSpecError(TerminalError, ValueError):
    """A run parameter is invalid; raised before anything is created in a cluster.

    `parameter` names the offending parameter as the DAG author wrote it (for example
    `container_resources.limits.memory`), so the message points at the line to fix. Messages never
    echo values that may hold secrets (env values, vars).
    """

    def __init__(self, parameter: str, problem: str) -> None:
        self.parameter = parameter
        self.problem = problem
        super().__init__(f"invalid parameter {parameter!r}: {problem}")
