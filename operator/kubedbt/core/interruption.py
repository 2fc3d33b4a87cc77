"""A run stopped from outside: what dbt finished, what it was running, what it never reached.

When the pod is stopped, kubedbt-launch interrupts dbt (SIGINT) and records when in a marker file;
dbt cancels its open queries and writes run_results.json with the nodes that had *finished*. The
node it was running and the nodes it never reached are not in that file, and `dbt retry` reruns
only what the file records as errored, failed or skipped: resumed as is, the next try would run
the interrupted node's errors at most and silently leave out everything after it.

So the uploader completes the file before it packs it, from three things dbt and the launcher
leave on the artifacts volume:
- the nodes dbt started (NodeStart events of its JSON log): those without a result were running
  when it was interrupted; each becomes an `error` result saying it was cancelled;
- the nodes the command selected (what `dbt ls` printed after dbt exited, or, for a `dbt retry`,
  what the restored state had it rerun): those neither finished nor started become `skipped`;
- the marker: which signal, when, and how long dbt took to stop.
The added results have the shape dbt gives a skipped node, so dbt's own loader reads the file
and `dbt retry` reruns exactly the unfinished nodes. When the selection is unknown (`dbt ls`
failed or ran out of time) the summary says so and the next try runs the full command instead.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict

from kubedbt.core.errors import shorten

# The statuses `dbt retry` reruns (dbt's own RETRYABLE_STATUSES, in dbt/task/retry.py).
RERUN_BY_DBT_RETRY: Final = frozenset(
    {"error", "fail", "skipped", "runtime error", "partial success"}
)
MAX_LISTED: Final = 50


class Interruption(TypedDict):
    """How a stopped run ended, in the summary: the signal, the timing and the unfinished nodes."""

    signal: str
    received_at: str | None
    exit_code: int | None
    stopped_after_seconds: float | None
    # Running when dbt was interrupted (now `error` results), at most MAX_LISTED of them.
    cancelled: list[str]
    cancelled_count: int
    # Selected but never started (now `skipped` results).
    not_started: int
    # Whether the selection was known, so not_started is complete and `dbt retry` can resume.
    selection_known: bool


@dataclass(frozen=True)
class StopMarker:
    """What the launcher recorded when it interrupted dbt."""

    signal: str
    received_at: str | None = None
    exit_code: int | None = None
    stopped_after_seconds: float | None = None

    def received_epoch(self) -> float | None:
        """When the stop signal came, as epoch seconds (None if the marker has no valid time)."""
        try:
            parsed = datetime.datetime.fromisoformat(str(self.received_at).replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed.timestamp() if parsed.tzinfo is not None else None


def parse_marker(text: str) -> StopMarker | None:
    """The launcher's marker file, or None when it is not one (never raises)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("signal"), str):
        return None
    code = value.get("exit_code")
    seconds = value.get("stopped_after_seconds")
    received = value.get("received_at")
    return StopMarker(
        signal=value["signal"],
        received_at=received if isinstance(received, str) else None,
        exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        stopped_after_seconds=float(seconds)
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        else None,
    )


def started_nodes(log_lines: Iterable[str]) -> list[str]:
    """The unique ids dbt started (NodeStart events of its JSON log), in start order."""
    started: dict[str, None] = {}
    for line in log_lines:
        if '"NodeStart"' not in line:  # cheap: most lines of a large log are not
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        info = event.get("info") if isinstance(event, dict) else None
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(info, dict) or info.get("name") != "NodeStart":
            continue
        node_info = data.get("node_info") if isinstance(data, dict) else None
        unique_id = node_info.get("unique_id") if isinstance(node_info, dict) else None
        if isinstance(unique_id, str) and unique_id:
            started[unique_id] = None
    return list(started)


def listed_nodes(lines: Iterable[str]) -> list[str]:
    """The unique ids of `dbt ls --output json --output-keys unique_id`, one JSON object a line."""
    found: dict[str, None] = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        unique_id = value.get("unique_id") if isinstance(value, dict) else None
        if isinstance(unique_id, str) and unique_id:
            found[unique_id] = None
    return list(found)


def rerun_by_retry(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """The unique ids `dbt retry` reruns from a run_results' results: its selection."""
    return [
        str(r.get("unique_id"))
        for r in results
        if r.get("status") in RERUN_BY_DBT_RETRY and r.get("unique_id")
    ]


def unfinished_result(unique_id: str, status: str, message: str) -> dict[str, Any]:
    """A result in the shape dbt writes for a node it skipped, with kubedbt's message."""
    return {
        "status": status,
        "timing": [],
        "thread_id": "",
        "execution_time": 0,
        "adapter_response": {},
        "message": message,
        "failures": None,
        "unique_id": unique_id,
        "compiled": False,
        "compiled_code": None,
        "relation_name": None,
        "batch_results": None,
    }


@dataclass
class Completion:
    """Completes one run_results' results as they stream past (see the module docstring)."""

    marker: StopMarker
    started: list[str]
    selected: list[str] | None
    seen: set[str] = field(default_factory=set)
    cancelled: list[str] = field(default_factory=list)
    not_started: int = 0

    def results(self, results: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The results dbt wrote, then one for each node that was running or never started."""
        for result in results:
            if isinstance(result, dict):  # anything else is refused downstream (results_of)
                self.seen.add(str(result.get("unique_id")))
            yield result
        when = f" at {self.marker.received_at}" if self.marker.received_at else ""
        stopped = f"the pod was stopped ({self.marker.signal}{when})"
        for unique_id in self.started:
            if unique_id not in self.seen:
                self.seen.add(unique_id)
                self.cancelled.append(unique_id)
                yield unfinished_result(
                    unique_id, "error", f"cancelled by kubedbt while it ran: {stopped}"
                )
        for unique_id in self.selected or ():
            if unique_id not in self.seen:
                self.seen.add(unique_id)
                self.not_started += 1
                yield unfinished_result(
                    unique_id, "skipped", f"not run: {stopped} before dbt reached it"
                )

    def members(self, members: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        """An artifact's top-level members with its results completed."""
        for key, value in members:
            if key == "results" and isinstance(value, (list, Iterator)):
                yield key, self.results(iter(value))
            else:
                yield key, value

    def summary(self) -> Interruption:
        """The interruption as the summary records it (complete once the results are read)."""
        return {
            "signal": self.marker.signal,
            "received_at": self.marker.received_at,
            "exit_code": self.marker.exit_code,
            "stopped_after_seconds": self.marker.stopped_after_seconds,
            "cancelled": self.cancelled[:MAX_LISTED],
            "cancelled_count": len(self.cancelled),
            "not_started": self.not_started,
            "selection_known": self.selected is not None,
        }


def describe(interruption: Interruption) -> str:
    """One line for a person: when dbt was interrupted and what it left unfinished."""
    took = interruption["stopped_after_seconds"]
    stopped = f"dbt stopped {took:.1f}s after {interruption['signal']}" if took is not None else ""
    parts = [stopped] if stopped else [f"dbt was interrupted ({interruption['signal']})"]
    count = interruption["cancelled_count"]
    if count:
        names = ", ".join(interruption["cancelled"][:3]) + (", ..." if count > 3 else "")
        parts.append(f"{count} node(s) cancelled while running ({names})")
    if interruption["selection_known"]:
        parts.append(f"{interruption['not_started']} not started")
    else:
        parts.append("the nodes not started are unknown (dbt ls did not finish)")
    return shorten("; ".join(parts), 400)
