"""Text the way kubectl prints it: aligned columns and short ages (pure)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Final

COLUMN_GAP: Final = 3
FIELD_WIDTH: Final = 14


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by three spaces, as `kubectl get` prints them."""
    widths = [len(title) for title in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    gap = " " * COLUMN_GAP
    return [
        gap.join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    ]


def field(label: str, value: object) -> str:
    """One `Label:  value` line of a description, values aligned as in kubectl describe."""
    return f"{label + ':':<{FIELD_WIDTH}}{value}"


def human_duration(seconds: float) -> str:
    """A duration as kubectl shows ages: 45s, 5m10s, 5m, 2h30m, 2h, 3d4h, 3d, 2y100d, 9y.

    The same thresholds as k8s.io/apimachinery's duration.HumanDuration.
    """
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 3 * 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 8 * 24:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if hours < 2 * 365 * 24:
        return f"{days}d"
    years = days // 365
    if hours < 8 * 365 * 24:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def age(created: datetime.datetime | None, now: datetime.datetime) -> str:
    """How long ago `created` was, kubectl style; <unknown> without a timestamp."""
    if created is None:
        return "<unknown>"
    return human_duration((now - created).total_seconds())
