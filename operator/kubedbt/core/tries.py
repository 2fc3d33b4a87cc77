"""Deciding what a new try does about the Jobs its task instance already has.

Airflow starts a new try when it believes the previous one is dead: a worker killed mid-run, a
heartbeat lost. The previous try's Job may still be running dbt, and a second dbt writing the same
relations beside it is the one thing that must never happen. So before it creates anything, a try
lists every Job of its task instance (by label, confirmed by the unsanitised annotations) and
plans:

- an earlier try of the same DAG run whose Job is still active is adopted: this try watches that
  Job to its end instead of starting dbt again;
- any other active Job of the task instance (from a DAG run that was deleted and triggered
  again under the same run_id, or from before the task was cleared, which `dag_run_key`
  tells apart) is stopped, and this try waits until its pods are gone;
- a Job that is already being deleted is waited for;
- finished Jobs are left alone (they are evidence, and the newest one with results can be resumed
  by `dbt retry`), except one holding this try's own name for an earlier DAG run, which is
  replaced so the name is free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubedbt.core.interruption import RERUN_BY_DBT_RETRY
from kubedbt.core.naming import (
    DAG_RUN_KEY_ANNOTATION,
    TRY_NUMBER_ANNOTATION,
    RunIdentity,
    task_instance_annotations,
)
from kubedbt.core.progress import job_finished


@dataclass(frozen=True)
class TryJob:
    """One existing Job of the task instance, as far as the plan cares."""

    name: str
    try_number: int
    dag_run_key: str | None
    finished: bool
    terminating: bool


@dataclass(frozen=True)
class LaunchPlan:
    """What a try does before (or instead of) creating its own Job."""

    adopt: TryJob | None = None
    stop: tuple[str, ...] = ()
    wait_for: tuple[str, ...] = ()

    @property
    def must_wait(self) -> tuple[str, ...]:
        """The Jobs whose pods must be gone before this try's dbt may start."""
        return (*self.stop, *self.wait_for)


def try_number_of(identity: RunIdentity, obj: Mapping[str, Any]) -> int | None:
    """The try an object belongs to, or None when it is not of the identity's task instance.

    Labels are sanitised and can collide; the annotations hold the original ids.
    """
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    wanted = task_instance_annotations(identity)
    if any(annotations.get(k) != v for k, v in wanted.items()):
        return None
    try:
        return int(annotations.get(TRY_NUMBER_ANNOTATION, ""))
    except ValueError:
        return None


def try_jobs(identity: RunIdentity, jobs: Iterable[Mapping[str, Any]]) -> list[TryJob]:
    """The Jobs that belong to the identity's task instance, oldest try first."""
    found = []
    for job in jobs:
        try_number = try_number_of(identity, job)
        if try_number is None:
            continue
        metadata = job.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        found.append(
            TryJob(
                name=str(metadata["name"]),
                try_number=try_number,
                dag_run_key=annotations.get(DAG_RUN_KEY_ANNOTATION),
                finished=job_finished(job),
                terminating=bool(metadata.get("deletionTimestamp")),
            )
        )
    return sorted(found, key=lambda j: j.try_number)


def same_dag_run(identity: RunIdentity, job: TryJob) -> bool:
    """Whether `job` was started by this DAG run (not by a deleted or cleared earlier one)."""
    return job.dag_run_key == identity.dag_run_key


def plan_launch(identity: RunIdentity, jobs: Iterable[TryJob]) -> LaunchPlan:
    """What this try must do about the task instance's existing Jobs."""
    adoptable: list[TryJob] = []
    stop: list[str] = []
    wait_for: list[str] = []
    for job in jobs:
        if job.terminating:
            wait_for.append(job.name)
        elif job.try_number == identity.try_number:
            # The same try run again (its worker restarted) adopts its own Job through the
            # create's 409; a Job of that name from another DAG run is in the way.
            if not same_dag_run(identity, job):
                stop.append(job.name)
        elif job.finished:
            continue
        elif job.try_number < identity.try_number and same_dag_run(identity, job):
            adoptable.append(job)
        else:
            stop.append(job.name)
    adopt = max(adoptable, key=lambda j: j.try_number, default=None)
    # Only the newest active earlier try is adopted; an older one still active is stopped.
    stop += [j.name for j in adoptable if j is not adopt]
    return LaunchPlan(adopt=adopt, stop=tuple(stop), wait_for=tuple(wait_for))


def resumable(
    identity: RunIdentity, configmaps: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Earlier tries' results ConfigMaps from this DAG run, newest try first."""
    found: list[tuple[int, Mapping[str, Any]]] = []
    for configmap in configmaps:
        annotations = (configmap.get("metadata") or {}).get("annotations") or {}
        if annotations.get(DAG_RUN_KEY_ANNOTATION) != identity.dag_run_key:
            continue
        try_number = try_number_of(identity, configmap)
        if try_number is not None and try_number < identity.try_number:
            found.append((try_number, configmap))
    return [configmap for _, configmap in sorted(found, key=lambda f: f[0], reverse=True)]


def why_not_resume(
    run_results: Mapping[str, Any] | None, summary: Mapping[str, Any] | None = None
) -> str | None:
    """Why an earlier try's run_results cannot be resumed by `dbt retry`; None when they can.

    dbt retry reruns the nodes the file records as errored, failed or skipped. A file that records
    no node at all (dbt stopped before the first one, or the packer had to leave the results out)
    makes it exit 2 ("Could not find previous run"); one whose nodes all succeeded (the failure was
    elsewhere, an on-run-end hook say) makes it exit 0 without running anything, and the task
    would succeed. Either way the full command is what the try must run. So it must when the try
    was interrupted and the nodes it never reached are unknown (its summary says so): dbt retry
    would leave them out.
    """
    if run_results is None:
        return "it left no run_results"
    interruption = (summary or {}).get("interruption") or {}
    if interruption and not interruption.get("selection_known"):
        return "it was interrupted and the nodes it never reached are unknown"
    results = run_results.get("results") or []
    if not results:
        return "its run_results record no node that ran"
    if not any(r.get("status") in RERUN_BY_DBT_RETRY for r in results):
        return "its run_results record no node for dbt retry to rerun"
    return None
