"""Starting a try's run: never a second dbt beside one the task instance already has.

The order is what makes a crashed worker harmless. First the task instance's existing Jobs are
listed and planned for (kubedbt.core.tries): an earlier try of this DAG run that is still running
is adopted, anything else still active is stopped and waited for. Only then is this try's Job
created, with its results ConfigMap (and, with a profile rendered from an Airflow connection, the
Secret holding it); a failure between them deletes the Job again, and a worker killed between them
leaves a Job that the next try adopts and gives its ConfigMap and Secret.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubedbt.core import naming, results
from kubedbt.core.errors import RetryableError
from kubedbt.core.naming import RunIdentity
from kubedbt.core.profiles import Profile, profile_spec, render_profile_secret, with_target
from kubedbt.core.render import (
    ANNOTATION_COMMAND,
    render_job,
    render_results_configmap,
    retry_spec,
)
from kubedbt.core.spec import DbtRunSpec
from kubedbt.core.tries import LaunchPlan, plan_launch, resumable, try_jobs, why_not_resume
from kubedbt.io.kube import CreatedRun, RunClient

# Seconds, on top of the pod's termination grace period, that a stopped Job may take to go.
STOP_MARGIN = 60.0


class TaskLog(Protocol):
    """Where the launch says what it did: the task log (a logging.Logger will do too)."""

    def info(self, event: Any, *args: Any, **kw: Any) -> Any:
        """Log at INFO."""

    def warning(self, event: Any, *args: Any, **kw: Any) -> Any:
        """Log at WARNING."""


@dataclass(frozen=True)
class Launched:
    """The run this try waits for: its own new Job, or an earlier try's that it adopted."""

    run: CreatedRun
    identity: RunIdentity
    state_from: str | None = None
    adopted_try: int | None = None


async def launch_run(
    client: RunClient,
    spec: DbtRunSpec,
    identity: RunIdentity,
    *,
    resume: bool,
    log: TaskLog,
    annotations: Mapping[str, str] | None = None,
    profile: Profile | None = None,
) -> Launched:
    """Create (or adopt) the run of `identity`, after clearing the way of other tries' dbt.

    `annotations` are kubedbt's own, added to the Job's (the watch's limits, say). `profile` is
    a profiles.yml rendered from an Airflow connection: it goes into a Secret of the try, owned
    by its Job, that only the dbt container mounts.
    """
    if profile is not None:
        spec = profile_spec(spec, profile)  # InvalidSpecError before anything is touched
    namespace = spec.namespace
    selector = naming.task_instance_selector(identity)
    jobs, _ = await client.list_objects(
        client.batch.list_namespaced_job, namespace, label_selector=selector
    )
    plan = plan_launch(identity, try_jobs(identity, jobs))
    await _clear_the_way(client, plan, namespace, spec.termination_grace_period + STOP_MARGIN, log)
    if plan.adopt is not None:
        adopted = plan.adopt
        return await _adopt(client, spec, identity, adopted.name, adopted.try_number, log, profile)
    state_from = await _resume_from(client, spec, identity, log) if resume else None
    run_spec = retry_spec(spec) if state_from is not None else spec
    secret = None if profile is None else render_profile_secret(run_spec, identity, profile)
    job = render_job(
        run_spec,
        identity,
        state_from=state_from,
        annotations=annotations,
        profile_secret=None if secret is None else secret["metadata"]["name"],
    )
    created = await client.create_run(job, render_results_configmap(run_spec, identity), secret)
    return Launched(created, identity, state_from)


async def _clear_the_way(
    client: RunClient,
    plan: LaunchPlan,
    namespace: str,
    timeout: float,
    log: TaskLog,
) -> None:
    for name in plan.stop:
        log.warning(
            "Job %s/%s of this task instance is still active but belongs to an older DAG run "
            "or an abandoned try: deleting it so that two dbt never run side by side",
            namespace,
            name,
        )
        await client.delete_job(name, namespace)
    for name in plan.must_wait:
        log.info("waiting for Job %s/%s and its pods to be gone", namespace, name)
        if not await client.wait_gone(name, namespace, timeout):
            raise RetryableError(
                f"Job {namespace}/{name} of this task instance was still stopping after "
                f"{timeout:.0f}s; not starting a second dbt beside it"
            )


async def _adopt(
    client: RunClient,
    spec: DbtRunSpec,
    identity: RunIdentity,
    job_name: str,
    try_number: int,
    log: TaskLog,
    profile: Profile | None,
) -> Launched:
    log.warning(
        "try %d's Job %s/%s is still running (that try's worker is gone): adopting it instead "
        "of starting dbt a second time",
        try_number,
        spec.namespace,
        job_name,
    )
    earlier = identity.with_try(try_number)
    job = await client.read_job(job_name, spec.namespace)
    if job is None:
        raise RetryableError(f"Job {spec.namespace}/{job_name} vanished while being adopted")
    uid = job["metadata"]["uid"]
    # A worker killed between creating the Job and its Secret or ConfigMap left dbt without its
    # profile, or the sidecar nowhere to upload to: give it them, the Secret first as create_run.
    if profile is not None:
        # Its dbt reads the Secret the Job was rendered with; a profile rendered now fills it only
        # when that try's worker died before creating it, under the target that Job's dbt asks
        # for (profile_target is templated: this try's may differ).
        adopted_profile = with_target(profile, _job_target(job) or profile.target)
        secret = render_profile_secret(spec, earlier, adopted_profile)
        await client.ensure_profile_secret(secret, job_name, uid, adopted=True)
    await client.ensure_results_configmap(render_results_configmap(spec, earlier), job_name, uid)
    created = CreatedRun(job_name=job_name, namespace=spec.namespace, uid=uid, adopted=True)
    return Launched(created, earlier, adopted_try=try_number)


def _job_target(job: Mapping[str, Any]) -> str | None:
    """The `--target` of the Job's dbt, from its command annotation (None without one)."""
    annotations = job["metadata"].get("annotations") or {}
    words = shlex.split(annotations.get(ANNOTATION_COMMAND, ""))
    for flag, value in itertools.pairwise(words):
        if flag == "--target":
            return value
    return None


async def _resume_from(
    client: RunClient,
    spec: DbtRunSpec,
    identity: RunIdentity,
    log: TaskLog,
) -> str | None:
    """The newest earlier try's ConfigMap holding run_results that `dbt retry` can resume."""
    if identity.previous_try() is None:
        return None
    configmaps, _ = await client.list_objects(
        client.core.list_namespaced_config_map,
        spec.namespace,
        label_selector=naming.task_instance_selector(identity),
    )
    for configmap in resumable(identity, configmaps):
        name = str(configmap["metadata"]["name"])
        decoded = results.decode(configmap)
        why_not = why_not_resume(decoded.run_results, decoded.summary)
        if why_not is None:
            log.info("retrying the nodes an earlier try did not finish (dbt retry on %s)", name)
            return name
        unreadable = f" ({decoded.upload_error})" if decoded.upload_error else ""
        log.info("not resuming from %s: %s%s", name, why_not, unreadable)
    log.info("no earlier try of this DAG run left run_results to resume: running the full command")
    return None
