"""How a run progresses, decided purely from what the cluster recorded.

The watch feeds what it observes (the run's Job and pods, as listed and as watch events) into a
RunProgress and asks it, at a given time, whether the run is over and when to ask again. Nothing
here reads a clock or the network, so the same observations always give the same decision.

Two rules make the decision safe for a trigger that is rebuilt at any moment (a triggerer
restart, a rolling deploy, a trigger handed to another triggerer):
- Nothing is decided before the Job and its pods have been listed once: a deadline cannot fire
  on a state nobody has read yet.
- The startup deadline is a duration counted from timestamps the cluster records (the creation of
  the Job and of its newest pod), not from the moment some worker or triggerer happened to start.
  A trigger rebuilt an hour into a healthy run sees dbt running and keeps waiting.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kubedbt.core.classify import DBT_CONTAINER, container_status, latest_pod

JSON = dict[str, Any]
Ending = Literal["finished", "cannot_start", "job_deleted", "startup", "execution"]
# Waiting reasons no amount of waiting fixes: the run ends at once instead of at startup_timeout.
HOPELESS_WAITING: Final = frozenset({"InvalidImageName", "ErrImageNeverPull"})


@dataclass(frozen=True)
class Decision:
    """Whether the run is over (and how), and when to decide again if nothing is observed."""

    ending: Ending | None
    wake_at: float | None = None


WAIT: Final = Decision(None)


@dataclass
class RunProgress:
    """What has been observed of one run, and the limits it runs under."""

    startup_timeout: float
    execution_deadline: float | None = None
    job: JSON | None = None
    pods: dict[str, JSON] = field(default_factory=dict)
    job_listed: bool = False
    pods_listed: bool = False
    job_deleted: bool = False

    # --- observations ---

    def listed(self, kind: Literal["job", "pod"], items: Iterable[JSON]) -> None:
        """A full list of the run's Jobs (by name) or pods (by selector)."""
        items = list(items)
        if kind == "job":
            self.job_listed = True
            if items:
                self.job = items[0]
            else:  # listed and absent: deleted (a relist after 410 can find it gone too)
                self.job_deleted = True
        else:
            self.pods_listed = True
            for pod in items:  # pods missing from the list keep their last state as evidence
                self.pods[pod["metadata"]["name"]] = pod

    def changed(self, kind: Literal["job", "pod"], event_type: str, obj: JSON) -> None:
        """One watch event (ADDED, MODIFIED or DELETED) of the Job or one of its pods."""
        if kind == "job":
            self.job = obj
            if event_type == "DELETED":
                self.job_deleted = True
        else:
            self.pods[obj["metadata"]["name"]] = obj  # a DELETED pod keeps its last state

    # --- facts derived from the observations ---

    @property
    def newest_pod(self) -> JSON | None:
        """The pod the Job created last (it replaces pods lost to disruptions)."""
        pod = latest_pod(list(self.pods.values()))
        return dict(pod) if pod is not None else None

    @property
    def dbt_started(self) -> bool:
        """Whether dbt has started in the newest pod."""
        return dbt_started_in(self.newest_pod)

    @property
    def ever_started(self) -> bool:
        """Whether dbt started in any of the run's pods (so it has a log to show)."""
        return any(dbt_started_in(pod) for pod in self.pods.values())

    def startup_deadline(self) -> float | None:
        """When dbt must have started in the newest pod; None once it has (or no Job is known)."""
        if self.dbt_started or self.job is None:
            return None
        created = [_timestamp(self.job)]
        if self.newest_pod is not None:
            created.append(_timestamp(self.newest_pod))
        known = [t for t in created if t is not None]
        return max(known) + self.startup_timeout if known else None

    # --- the decision ---

    def decide(self, now: float) -> Decision:
        """Whether the run is over at `now`, and if not, when a deadline next falls due."""
        if not (self.job_listed and self.pods_listed):
            return WAIT
        if self.job is not None and job_finished(self.job):
            return Decision("finished")
        if self.job_deleted:
            return Decision("job_deleted")
        if _waiting_reason(self.newest_pod) in HOPELESS_WAITING:
            return Decision("cannot_start")
        deadlines: list[tuple[float, Ending]] = []
        if self.execution_deadline is not None:
            deadlines.append((self.execution_deadline, "execution"))
        startup = self.startup_deadline()
        if startup is not None:
            deadlines.append((startup, "startup"))
        if not deadlines:
            return WAIT
        due, which = min(deadlines)
        return Decision(which) if now >= due else Decision(None, wake_at=due)


def job_finished(job: Mapping[str, Any]) -> bool:
    """Whether the Job has a true Complete or Failed condition."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return True
    return False


def _dbt_state(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if pod is None:
        return {}
    return (container_status(pod, DBT_CONTAINER) or {}).get("state") or {}


def dbt_started_in(pod: Mapping[str, Any] | None) -> bool:
    """Whether dbt has started (and maybe ended) in `pod`."""
    state = _dbt_state(pod)
    return "running" in state or "terminated" in state


def _waiting_reason(pod: Mapping[str, Any] | None) -> str | None:
    reason = (_dbt_state(pod).get("waiting") or {}).get("reason")
    return str(reason) if reason else None


def _timestamp(obj: Mapping[str, Any]) -> float | None:
    """metadata.creationTimestamp as epoch seconds (watch events say Z, client reads +00:00)."""
    text = (obj.get("metadata") or {}).get("creationTimestamp")
    if not text:
        return None
    parsed = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return parsed.timestamp()
