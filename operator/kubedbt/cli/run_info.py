"""What a kubedbt Job says about its run, read from the Job as the API returns it (pure).

The identity comes from the annotations, which hold the original Airflow ids (labels hold
sanitised ones). The state comes from the Job's conditions, the way kubectl reads them:
Complete or SuccessCriteriaMet is Succeeded, Failed or FailureTarget is Failed (the Target
conditions are set first, while the pods still terminate), otherwise Running while the Job has
active pods and Pending before it has any.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from kubedbt.cli.errors import USAGE, CliError
from kubedbt.core import naming
from kubedbt.core.live import PROGRESS_ANNOTATION, Snapshot, parse_snapshot
from kubedbt.core.render import ANNOTATION_COMMAND, ANNOTATION_RESULTS

RunStatus = Literal["Running", "Succeeded", "Failed", "Pending"]
RUN_STATUSES: Final[tuple[RunStatus, ...]] = get_args(RunStatus)
KUBEDBT_SELECTOR: Final = f"app.kubernetes.io/name={naming.APP_NAME}"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"


@dataclass(frozen=True)
class RunInfo:
    """One run (one try of one task instance), as its Job describes it."""

    name: str
    namespace: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: str
    status: RunStatus
    created: datetime.datetime | None
    command: str
    results_configmap: str

    @property
    def task(self) -> str:
        """The task id, with the map index of a mapped task instance: `build[3]`."""
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> RunInfo:
        """The run a Job (API JSON) belongs to."""
        metadata = job.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        name = str(metadata.get("name", ""))

        def identity(key: str) -> str:
            return str(annotations.get(naming.LABEL_PREFIX + key, ""))

        map_index = identity("map-index")
        return cls(
            name=name,
            namespace=str(metadata.get("namespace", "")),
            dag_id=identity("dag-id"),
            task_id=identity("task-id"),
            run_id=identity("run-id"),
            map_index=int(map_index) if map_index.lstrip("-").isdigit() else -1,
            try_number=identity("try-number"),
            status=job_status(job),
            created=parse_time(metadata.get("creationTimestamp")),
            command=str(annotations.get(ANNOTATION_COMMAND, "")),
            results_configmap=str(
                annotations.get(ANNOTATION_RESULTS) or name + naming.RESULTS_SUFFIX
            ),
        )


def live_progress(configmap: Mapping[str, Any] | None) -> Snapshot | None:
    """The sidecar's tally of dbt's log on the results ConfigMap, or None (absent, unreadable)."""
    annotations = ((configmap or {}).get("metadata") or {}).get("annotations") or {}
    return parse_snapshot(annotations.get(PROGRESS_ANNOTATION))


def job_status(job: Mapping[str, Any]) -> RunStatus:
    """Succeeded, Failed, Running or Pending, from the Job's conditions and active pods."""
    status = job.get("status") or {}
    true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
    if true & {"Failed", "FailureTarget"}:
        return "Failed"
    if true & {"Complete", "SuccessCriteriaMet"}:
        return "Succeeded"
    return "Running" if status.get("active") else "Pending"


def parse_time(value: object) -> datetime.datetime | None:
    """An API timestamp (RFC 3339, "Z" or "+00:00" as the client serialises it), or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


@dataclass(frozen=True)
class RunFilter:
    """Which runs to show: exact Airflow ids (from the annotations) and a state."""

    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    status: RunStatus | None = None

    def matches(self, run: RunInfo) -> bool:
        """Whether `run` passes every filter that is set."""
        wanted = (
            (self.dag_id, run.dag_id),
            (self.task_id, run.task_id),
            (self.run_id, run.run_id),
            (self.status, run.status),
        )
        return all(want is None or want == have for want, have in wanted)


def newest_first(runs: Sequence[RunInfo]) -> list[RunInfo]:
    """Runs sorted by creation time, newest first (by name within the same second)."""
    oldest = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    by_name = sorted(runs, key=lambda r: (r.namespace, r.name))
    return sorted(by_name, key=lambda r: r.created or oldest, reverse=True)


def pick_run(jobs: Sequence[Mapping[str, Any]], wanted: str, namespace: str) -> Mapping[str, Any]:
    """The Job named `wanted`, or the only one whose name starts with it."""
    names = {str((job.get("metadata") or {}).get("name")): job for job in jobs}
    if wanted in names:
        return names[wanted]
    matching = sorted(name for name in names if name.startswith(wanted))
    if len(matching) == 1:
        return names[matching[0]]
    if not matching:
        raise CliError(
            f'no kubedbt run "{wanted}" in namespace "{namespace}"; '
            f"list the runs with: kubectl dbt runs -n {namespace}"
        )
    shown = ", ".join(matching[:5]) + (", ..." if len(matching) > 5 else "")
    raise CliError(
        f'"{wanted}" matches {len(matching)} runs in namespace "{namespace}" ({shown}); '
        "give more of the name",
        USAGE,
    )
