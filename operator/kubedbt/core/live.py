"""Live progress of a dbt invocation: a tally of dbt's JSON log, kept while dbt runs (pure).

The results sidecar feeds dbt's JSON log to a LiveTally one line at a time as dbt writes it and
patches the snapshot into the results ConfigMap's PROGRESS_ANNOTATION; the trigger and
`kubectl dbt runs` read it back with parse_snapshot and say it in words with progress_line.

Three of dbt's structured events are enough: NodeStart and NodeFinished (data.node_info carries
unique_id and node_status; every selected node gets both, skipped ones included) and LogStartLine,
whose data.total is the "N of M" count of the invocation. The annotation is written by the pod,
so a reader treats it as untrusted: parse_snapshot refuses anything oversized or malformed, and
the encoding has a hard size bound (the running list is capped, ids and statuses are cut).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kubedbt.core import naming
from kubedbt.core.timestamps import epoch_seconds

PROGRESS_ANNOTATION: Final = naming.LABEL_PREFIX + "progress"
# The running nodes a snapshot names (the oldest first); the rest are only counted.
MAX_RUNNING: Final = 5
# Node statuses a snapshot keeps; dbt has fewer, so more means the log is not dbt's.
MAX_STATUSES: Final = 12
ID_CHARS: Final = 256
STATUS_CHARS: Final = 24
# Bound on the encoded snapshot: MAX_RUNNING ids and MAX_STATUSES statuses fit with room to spare.
MAX_ENCODED: Final = 4096
# Only lines naming one of these events are parsed: the log is mostly SQL and connection events.
_EVENTS: Final = ("NodeStart", "NodeFinished", "LogStartLine")


@dataclass(frozen=True)
class RunningNode:
    """A node dbt has started and not finished, and when it started (epoch seconds)."""

    unique_id: str
    started_at: float | None


@dataclass(frozen=True)
class Snapshot:
    """How far the invocation has got: nodes done by status, its total, what runs now."""

    done: Mapping[str, int] = field(default_factory=dict)
    total: int | None = None
    running: tuple[RunningNode, ...] = ()
    running_count: int = 0

    @property
    def done_count(self) -> int:
        """Nodes finished, whatever their status."""
        return sum(self.done.values())

    def encode(self) -> str:
        """Compact JSON, at most MAX_ENCODED characters."""
        body = {
            "done": {
                status[:STATUS_CHARS]: n for status, n in list(self.done.items())[:MAX_STATUSES]
            },
            "total": self.total,
            "running": [
                [node.unique_id[:ID_CHARS], node.started_at] for node in self.running[:MAX_RUNNING]
            ],
            "running_count": self.running_count,
        }
        text = json.dumps(body, separators=(",", ":"))
        if len(text) > MAX_ENCODED:  # cannot happen within the caps above; the bound is hard
            text = json.dumps(
                {"done": {}, "total": self.total, "running_count": self.running_count}
            )
        return text


class LiveTally:
    """The running tally of one dbt JSON log, fed line by line (a line may be cut or foreign)."""

    def __init__(self) -> None:
        self._done: dict[str, int] = {}
        self._running: dict[str, float | None] = {}
        self._total: int | None = None

    def feed(self, line: str) -> bool:
        """Take one log line; whether the tally changed. Lines that are not dbt's are ignored."""
        if not any(name in line for name in _EVENTS):
            return False
        try:
            event = json.loads(line)
        except ValueError:
            return False
        if not isinstance(event, dict):
            return False
        info, data = event.get("info"), event.get("data")
        if not isinstance(info, dict) or not isinstance(data, dict):
            return False
        return self._take(str(info.get("name")), data, info.get("ts"))

    def _take(self, name: str, data: Mapping[str, Any], ts: Any) -> bool:
        if name == "LogStartLine":
            total = data.get("total")
            if isinstance(total, int) and total >= 0 and total != self._total:
                self._total = total
                return True
            return False
        node = data.get("node_info")
        if not isinstance(node, dict) or not isinstance(node.get("unique_id"), str):
            return False
        unique_id: str = node["unique_id"]
        if name == "NodeStart":
            self._running[unique_id] = _epoch(ts)
            return True
        if name == "NodeFinished":
            self._running.pop(unique_id, None)
            status = str(node.get("node_status") or "unknown")[:STATUS_CHARS]
            if status not in self._done and len(self._done) >= MAX_STATUSES - 1:
                status = "other"  # the last room, so the counts always add up
            self._done[status] = self._done.get(status, 0) + 1
            return True
        return False

    def snapshot(self) -> Snapshot:
        """The tally now; the running nodes are the oldest MAX_RUNNING, oldest first."""
        oldest = sorted(self._running.items(), key=lambda item: (item[1] or 0.0, item[0]))
        return Snapshot(
            done=dict(self._done),
            total=self._total,
            running=tuple(RunningNode(uid, at) for uid, at in oldest[:MAX_RUNNING]),
            running_count=len(self._running),
        )


def parse_snapshot(text: object) -> Snapshot | None:
    """A snapshot read back from the annotation, or None when it is absent or not one."""
    if not isinstance(text, str) or not text or len(text) > MAX_ENCODED:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    done = body.get("done")
    if not isinstance(done, dict) or len(done) > MAX_STATUSES:
        return None
    if not all(_count(n) for n in done.values()):
        return None
    total = body.get("total")
    if total is not None and not _count(total):
        return None
    running = []
    for item in body.get("running") or []:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            return None
        at = item[1]
        if at is not None and not _time(at):
            return None
        running.append(RunningNode(item[0][:ID_CHARS], None if at is None else float(at)))
    count = body.get("running_count", len(running))
    if not _count(count):
        return None
    return Snapshot(
        done={str(k)[:STATUS_CHARS]: int(v) for k, v in done.items()},
        total=total,
        running=tuple(running[:MAX_RUNNING]),
        running_count=max(int(count), len(running)),
    )


def _time(value: object) -> bool:
    """An epoch time a reader can do arithmetic with (json.loads accepts NaN and Infinity)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value < 1e11
    )


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9


def _epoch(ts: Any) -> float | None:
    """The event's timestamp (dbt writes UTC) as epoch seconds to the millisecond, or None."""
    seconds = epoch_seconds(ts)
    return None if seconds is None else round(seconds, 3)


def short_duration(seconds: float) -> str:
    """45s, 3m12s, 2h05m: how long a node has run, for a log line."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(snapshot: Snapshot, now: float, *, command: str = "dbt") -> str:
    """One line for the task log (without a prefix when `command` is empty).

    `dbt build: 12 of 28 nodes done (11 success, 1 error), running model.shop.customers for 3m12s`
    """
    done = snapshot.done_count
    counted = f"{done} of {snapshot.total}" if snapshot.total is not None else str(done)
    line = f"{command}: {counted} nodes done" if command else f"{counted} nodes done"
    if snapshot.done:
        by_status = sorted(snapshot.done.items(), key=lambda item: (-item[1], item[0]))
        line += " (" + ", ".join(f"{n} {status}" for status, n in by_status) + ")"
    if snapshot.running:
        first = snapshot.running[0]
        line += f", running {first.unique_id}"
        if first.started_at is not None:
            line += f" for {short_duration(now - first.started_at)}"
        others = snapshot.running_count - 1
        if others > 0:
            line += f" and {others} more"
    return line


def short_progress(snapshot: Snapshot) -> str:
    """`12/28 running customers` for a table column (the oldest running node's name)."""
    done = snapshot.done_count
    text = f"{done}/{snapshot.total}" if snapshot.total is not None else str(done)
    if snapshot.running:
        parts = snapshot.running[0].unique_id.split(".")
        text += f" running {parts[2] if len(parts) >= 3 else parts[-1]}"
        if snapshot.running_count > 1:
            text += f" +{snapshot.running_count - 1}"
    return text


@dataclass
class LineGate:
    """When the trigger writes a progress line.

    On a change, at most once per `interval` seconds; without one, every `heartbeat` seconds
    while a node keeps running (a two-hour model is not silent either).
    """

    interval: float = 30.0
    heartbeat: float = 300.0
    last_at: float | None = None
    last: Snapshot | None = None

    def due(self, snapshot: Snapshot | None, now: float) -> bool:
        """Whether to write a line for `snapshot` at `now` (and remember that it was)."""
        if snapshot is None:
            return False
        if self.last_at is not None:
            since = now - self.last_at
            changed = snapshot != self.last
            if since < self.interval or (not changed and since < self.heartbeat):
                return False
            if not changed and not snapshot.running:
                return False
        self.last_at, self.last = now, snapshot
        return True
