"""How a run progresses, decided purely from what the cluster recorded.

The watch feeds what it observes of one run (its Job, its pods and its results ConfigMap, as
listed and as watch events) into a RunProgress and asks it, at a given time, whether the run is
over and when to ask again. Nothing here reads a clock or the network, so the same observations
always give the same decision.

Three rules make the decision safe for a trigger that is rebuilt at any moment (a triggerer
restart, a rolling deploy, a trigger handed to another triggerer):
- Nothing is decided before the Job, its pods and its ConfigMap have been listed once: a deadline
  cannot fire on a state nobody has read yet.
- Every deadline is a duration counted from a timestamp the cluster records (the creation of the
  Job and of its newest pod, the time a condition turned true, a pod's deletionTimestamp), never
  from the moment some worker or triggerer happened to start. A trigger rebuilt an hour into a
  healthy run sees dbt running and keeps waiting.
- The Job's own conditions are authoritative for the end. Once it has ended, the results upload
  is waited for (bounded by results_timeout after the Job's end) and nothing else.

The execution timeout does not end the run by itself: the decision asks the watch to stop it
(Decision.stop), which kubedbt does the way dbt wants to be stopped (RunClient.stop_run: the pod's
SIGTERM reaches dbt as SIGINT, it cancels its queries and writes run_results), and the run then
ends as the Job does, with what dbt finished uploaded. Only a run still going the pod's grace
period plus results_timeout after the stop was requested (as recorded on the Job) ends here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kubedbt.core import naming
from kubedbt.core.classify import (
    Evidence,
    Outcome,
    TimedOut,
    blocked_container,
    classify,
    container_status,
    latest_pod,
)
from kubedbt.core.live import PROGRESS_ANNOTATION, Snapshot, parse_snapshot
from kubedbt.core.naming import DBT_CONTAINER, SIDECAR_CONTAINER
from kubedbt.core.results import UPLOAD_STATUS, RunResults
from kubedbt.core.timestamps import epoch_seconds

JSON = dict[str, Any]
Kind = Literal["job", "pod", "configmap"]
Ending = Literal[
    "finished", "cannot_start", "job_deleted", "startup", "execution", "suspended", "terminating"
]


@dataclass(frozen=True)
class Decision:
    """Whether the run is over (and how), and when to decide again if nothing is observed.

    stop: the execution timeout has come; the watch stops the run and goes on watching it end.
    """

    ending: Ending | None
    wake_at: float | None = None
    stop: bool = False


WAIT: Final = Decision(None)
DEFAULT_STARTUP_TIMEOUT: Final = 300.0
DEFAULT_RESULTS_TIMEOUT: Final = 60.0
# Kubernetes' default terminationGracePeriodSeconds, for a Job whose template does not set one.
DEFAULT_GRACE: Final = 30.0
_TIMED_OUT: Final[dict[Ending, TimedOut]] = {
    "startup": "startup",
    "execution": "execution",
    "suspended": "suspended",
    "terminating": "terminating",
}


@dataclass
class RunProgress:
    """What has been observed of one run, and the limits it runs under.

    startup_timeout: seconds dbt may take to start, from the Job's or newest pod's creation; also
    how long a Job may stay suspended or its pod stuck terminating. execution_timeout: seconds the
    run may take from its Job's creation. results_timeout: seconds to wait after the Job's end for
    the sidecar's upload to be marked.
    """

    startup_timeout: float
    execution_timeout: float | None = None
    results_timeout: float = 60.0
    job: JSON | None = None
    pods: dict[str, JSON] = field(default_factory=dict)
    upload_status: str | None = None  # None: no results ConfigMap seen
    # The sidecar's tally of dbt's log (kubedbt.core.live); None until a readable one is seen.
    live: Snapshot | None = None
    listed_kinds: set[Kind] = field(default_factory=set)
    job_deleted: bool = False
    # When this watch asked for the stop, until the Job's annotation that records it is seen.
    stop_sent_at: float | None = None

    @classmethod
    def for_job(cls, job: Mapping[str, Any]) -> RunProgress:
        """A progress with the limits the operator recorded on the Job (defaults if it did not)."""
        annotations = (job.get("metadata") or {}).get("annotations") or {}

        def seconds(key: str) -> float | None:
            try:
                return float(annotations[key])
            except (KeyError, ValueError):
                return None

        return cls(
            startup_timeout=seconds(naming.STARTUP_TIMEOUT_ANNOTATION) or DEFAULT_STARTUP_TIMEOUT,
            execution_timeout=seconds(naming.EXECUTION_TIMEOUT_ANNOTATION),
            results_timeout=seconds(naming.RESULTS_TIMEOUT_ANNOTATION) or DEFAULT_RESULTS_TIMEOUT,
        )

    # --- observations ---

    def listed(self, kind: Kind, items: Iterable[JSON]) -> None:
        """A full list of the run's objects of one kind."""
        items = list(items)
        self.listed_kinds.add(kind)
        if kind == "job":
            if items:
                self.job = items[0]
            else:  # listed and absent: deleted (a relist after 410 can find it gone too)
                self.job_deleted = True
        elif kind == "pod":
            for pod in items:  # pods missing from the list keep their last state as evidence
                self.pods[pod["metadata"]["name"]] = pod
        else:
            self.upload_status = _upload_status(items[0]) if items else None
            self._record_live(items[0] if items else None)

    def changed(self, kind: Kind, event_type: str, obj: JSON) -> None:
        """One watch event (ADDED, MODIFIED or DELETED) of the run's Job, pod or ConfigMap."""
        if kind == "job":
            self.job = obj
            if event_type == "DELETED":
                self.job_deleted = True
        elif kind == "pod":
            self.pods[obj["metadata"]["name"]] = obj  # a DELETED pod keeps its last state
        else:
            self.upload_status = None if event_type == "DELETED" else _upload_status(obj)
            self._record_live(obj)

    def _record_live(self, configmap: Mapping[str, Any] | None) -> None:
        """Keep the latest readable tally; a missing or unreadable one leaves the last in place.

        The pod writes it, so it is untrusted input: parse_snapshot bounds and checks it.
        """
        annotations = ((configmap or {}).get("metadata") or {}).get("annotations") or {}
        if not isinstance(annotations, Mapping):
            return
        snapshot = parse_snapshot(annotations.get(PROGRESS_ANNOTATION))
        if snapshot is not None:
            self.live = snapshot

    def observe(self, kind: Kind, event_type: str, payload: Any) -> None:
        """A list ("LIST", the objects) or a watch event (its type, the object)."""
        if event_type == "LIST":
            self.listed(kind, payload)
        else:
            self.changed(kind, event_type, payload)

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
        created = [timestamp(self.job, "creationTimestamp")]
        if self.newest_pod is not None:
            created.append(timestamp(self.newest_pod, "creationTimestamp"))
        known = [t for t in created if t is not None]
        return max(known) + self.startup_timeout if known else None

    def stop_requested_at(self) -> float | None:
        """When the run was asked to stop (by this watch or anyone: the Job records it)."""
        annotations = ((self.job or {}).get("metadata") or {}).get("annotations") or {}
        recorded = epoch_seconds(annotations.get(naming.STOP_REQUESTED_ANNOTATION))
        return recorded if recorded is not None else self.stop_sent_at

    def grace_period(self) -> float:
        """The pod's terminationGracePeriodSeconds, as the Job's template sets it."""
        template = (((self.job or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
        grace = template.get("terminationGracePeriodSeconds")
        return float(grace) if isinstance(grace, (int, float)) else DEFAULT_GRACE

    def deadlines(self) -> list[tuple[float, Ending | None]]:
        """Every deadline that applies to the run as observed, with the ending it brings.

        None: the execution timeout, which brings a stop rather than an ending.
        """
        found: list[tuple[float, Ending | None]] = []
        created = timestamp(self.job, "creationTimestamp") if self.job else None
        stopped = self.stop_requested_at()
        if stopped is not None:
            found.append((stopped + self.grace_period() + self.results_timeout, "execution"))
        elif self.execution_timeout is not None and created is not None:
            found.append((created + self.execution_timeout, None))
        suspended = condition_since(self.job, "Suspended")
        if suspended is not None:
            found.append((suspended + self.startup_timeout, "suspended"))
        else:
            startup = self.startup_deadline()
            if startup is not None:
                found.append((startup, "startup"))
        terminating = timestamp(self.newest_pod, "deletionTimestamp")
        if terminating is not None and not _pod_done(self.newest_pod):
            found.append((terminating + self.startup_timeout, "terminating"))
        return found

    # --- the decision ---

    def decide(self, now: float) -> Decision:
        """Whether the run is over at `now`, and if not, when a deadline next falls due."""
        if not {"job", "pod", "configmap"} <= self.listed_kinds:
            return WAIT
        if self.job is not None and job_finished(self.job):
            return self._results_wait(now)
        if self.job_deleted:
            return Decision("job_deleted")
        blocked = blocked_container(self.newest_pod)
        if blocked is not None and blocked.hopeless:
            return Decision("cannot_start")
        deadlines = self.deadlines()
        if not deadlines:
            return WAIT
        due, which = min(deadlines, key=lambda deadline: deadline[0])
        if now < due:
            return Decision(None, wake_at=due)
        return Decision(which) if which is not None else Decision(None, stop=True)

    def evidence(
        self,
        ending: Ending,
        *,
        results: RunResults | None = None,
        events: Sequence[Mapping[str, Any]] = (),
        memory_limit: str | None = None,
    ) -> Evidence:
        """What the classifier judges a run by, once `ending` is decided."""
        return Evidence(
            job=self.job,
            pods=list(self.pods.values()),
            results=results,
            timed_out=_TIMED_OUT.get(ending),
            memory_limit=memory_limit,
            job_deleted=ending == "job_deleted",
            events=events,
        )

    def _results_wait(self, now: float) -> Decision:
        """A finished Job: over once its upload is marked, or results_timeout after its end.

        Nothing is waited for when no upload can come: the uploader never started (an init
        container failed, say), or the pod has ended, so the uploader has exited and whatever it
        patched is there for the final read of the ConfigMap.
        """
        if (
            self.upload_status != "pending"
            or not _started(self.newest_pod, SIDECAR_CONTAINER)
            or _pod_done(self.newest_pod)
        ):
            return Decision("finished")
        ended = job_end(self.job) if self.job is not None else None
        if ended is None:
            return Decision("finished")
        # A stopped run's Job can be marked failed before its pod has ended (Kubernetes < 1.31):
        # dbt and the upload have the pod's grace period from the stop.
        stopped = self.stop_requested_at()
        if stopped is not None:
            ended = max(ended, stopped + self.grace_period())
        due = ended + self.results_timeout
        return Decision("finished") if now >= due else Decision(None, wake_at=due)


def judge(
    progress: RunProgress,
    now: float,
    *,
    results: RunResults | None = None,
    events: Sequence[Mapping[str, Any]] = (),
) -> Outcome | None:
    """The outcome the operator's watch would report at `now`, or None while it would wait.

    `kubectl dbt describe` calls this with what it reads; the watch makes the same two calls
    (RunProgress.decide, then classify), so the two never disagree.
    """
    decision = progress.decide(now)
    if decision.ending is None:
        return None
    return classify(progress.evidence(decision.ending, results=results, events=events))


def job_finished(job: Mapping[str, Any]) -> bool:
    """Whether the Job has a true Complete or Failed condition."""
    return _condition_true(job, "Complete") or _condition_true(job, "Failed")


def job_end(job: Mapping[str, Any]) -> float | None:
    """When the Job's Complete or Failed condition turned true, if it has."""
    for kind in ("Complete", "Failed"):
        since = condition_since(job, kind)
        if since is not None:
            return since
    return None


def _condition_true(obj: Mapping[str, Any] | None, kind: str) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def condition_since(obj: Mapping[str, Any] | None, kind: str) -> float | None:
    """When a true condition of type `kind` last turned true (None if not true or no time)."""
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return epoch_seconds(condition.get("lastTransitionTime"))
    return None


def _started(pod: Mapping[str, Any] | None, container: str) -> bool:
    """Whether `container` has started (and maybe ended) in `pod`."""
    status = (container_status(pod, container) if pod is not None else None) or {}
    state = status.get("state") or {}
    return "running" in state or "terminated" in state or bool(status.get("lastState"))


def dbt_started_in(pod: Mapping[str, Any] | None) -> bool:
    """Whether dbt has started (and maybe ended) in `pod`."""
    return _started(pod, DBT_CONTAINER)


def _pod_done(pod: Mapping[str, Any] | None) -> bool:
    return ((pod or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _upload_status(configmap: Mapping[str, Any]) -> str:
    annotations = (configmap.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(UPLOAD_STATUS, "pending"))


def timestamp(obj: Mapping[str, Any] | None, key: str) -> float | None:
    """A metadata timestamp (creationTimestamp, deletionTimestamp) as epoch seconds."""
    return epoch_seconds(((obj or {}).get("metadata") or {}).get(key))
