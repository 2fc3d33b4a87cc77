"""Timestamps as the API server and dbt write them, read as epoch seconds."""

from __future__ import annotations

import datetime
from typing import Any


def epoch_seconds(text: Any) -> float | None:
    """An ISO 8601 time as epoch seconds, or None when absent or unreadable.

    The API server writes "...Z" (the Python client "+00:00") and dbt writes UTC, sometimes
    without an offset: a time without one is UTC. Annotations and pod-written ConfigMaps can hold
    anything, so an unreadable value is no time at all, never an error.
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()
