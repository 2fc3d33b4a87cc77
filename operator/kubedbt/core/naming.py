"""Deterministic names, labels and annotations for one try of one Airflow task.

The Job name is a function of (dag_id, task_id, run_id, map_index, try_number) alone. Creating the
same try twice therefore hits a 409 that the operator turns into "adopt the Job that is already
there", and the next try's name is known without asking the cluster (the failed-nodes retry reads
the previous try's results ConfigMap by name).

Airflow ids allow characters Kubernetes names and label values do not, so both are sanitised; when
sanitising changed a value, a short hash of the original is appended so that two different ids can
never end up with the same name or label. The unsanitised values go into annotations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass

from kubedbt.core import validate
from kubedbt.core.errors import InvalidSpecError

LABEL_PREFIX = "kubedbt.io/"
APP_NAME = "kubedbt"
COMPONENT = "dbt-run"
MAX_NAME = 63
RESULTS_SUFFIX = "-results"
PROFILE_SUFFIX = "-profile"
# The containers of a run's pod: the user's dbt, kubedbt's results uploader (a native sidecar), the
# init container that installs the launcher dbt runs under and, on a try that resumes an earlier
# one, the init container that restores its run_results.
DBT_CONTAINER = "dbt"
SIDECAR_CONTAINER = "results-uploader"
RESTORE_CONTAINER = "restore-state"
LAUNCHER_CONTAINER = "install-launcher"
# Job names stay short enough that "<job>-results" is itself a valid DNS label.
MAX_JOB_NAME = MAX_NAME - len(RESULTS_SUFFIX)
_HASH_CHARS = 10


@dataclass(frozen=True)
class RunIdentity:
    """Which Airflow task instance try a Job belongs to.

    dag_run_key tells this start of the DAG run from an earlier one under the same run_id: a
    DAG run deleted and triggered again (another start date) or cleared (another clear number).
    It is recorded on the objects but is not part of any name, so names stay a function of the
    task instance and the try.
    """

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int = 1
    dag_run_key: str | None = None

    def __post_init__(self) -> None:
        validate.string("dag_id", self.dag_id)
        validate.string("task_id", self.task_id)
        validate.string("run_id", self.run_id)
        validate.integer("map_index", self.map_index, minimum=-1)
        validate.integer("try_number", self.try_number, minimum=1)

    def previous_try(self) -> RunIdentity | None:
        """The identity of the try before this one, or None for the first try."""
        if self.try_number == 1:
            return None
        return self.with_try(self.try_number - 1)

    def with_try(self, try_number: int) -> RunIdentity:
        """The identity of another try of the same task instance in the same DAG run."""
        return dataclasses.replace(self, try_number=try_number)

    def same_task_instance(self, other: RunIdentity) -> bool:
        """Whether two identities differ only by try number."""
        return (self.dag_id, self.task_id, self.run_id, self.map_index) == (
            other.dag_id,
            other.task_id,
            other.run_id,
            other.map_index,
        )


def _digest(*parts: object) -> str:
    # NUL cannot occur in Airflow ids, so joining with it keeps distinct tuples distinct.
    joined = "\0".join(str(p) for p in parts)
    return hashlib.sha256(joined.encode()).hexdigest()[:_HASH_CHARS]


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-")


def job_name(identity: RunIdentity) -> str:
    """The Job's name: readable prefix from dag and task, a hash of the whole identity, the try.

    Example: ``dbt-daily-marts-dbt-build-3f2a9c1b0e-t2``.
    """
    digest = _digest(
        identity.dag_id, identity.task_id, identity.run_id, identity.map_index, identity.try_number
    )
    suffix = f"-{digest}-t{identity.try_number}"
    room = MAX_JOB_NAME - len("dbt-") - len(suffix)
    readable = _slug(f"{identity.dag_id}-{identity.task_id}", room)
    return f"dbt-{readable}{suffix}" if readable else f"dbt{suffix}"


def results_configmap_name(identity: RunIdentity) -> str:
    """The results ConfigMap's name, derived from the Job's."""
    return job_name(identity) + RESULTS_SUFFIX


def profile_secret_name(identity: RunIdentity) -> str:
    """The name of the Secret holding the profiles.yml rendered for the try, derived from the Job's.

    One per try, so a try never reads a profile rendered from an older state of the connection.
    """
    return job_name(identity) + PROFILE_SUFFIX


def label_value(text: str) -> str:
    """A valid label value that stands for `text`, distinct for distinct texts.

    Valid values are returned unchanged, so `kubectl get jobs -l kubedbt.io/dag-id=daily` works as
    a person would type it; anything else becomes a sanitised prefix plus a hash of the original.
    """
    if len(text) <= MAX_NAME and validate.LABEL_VALUE.fullmatch(text):
        return text
    digest = _digest(text)
    room = MAX_NAME - len(digest) - 1
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:room]
    cleaned = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)
    return f"{cleaned}-{digest}" if cleaned else digest


INSTANCE_LABEL = "app.kubernetes.io/instance"


def selector_labels(identity: RunIdentity) -> dict[str, str]:
    """The labels that pick out exactly the objects of one try."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        INSTANCE_LABEL: job_name(identity),
    }


def run_labels(identity: RunIdentity) -> dict[str, str]:
    """Labels a person filters on with kubectl, for the Job, its pods and its ConfigMap."""
    labels = {
        **selector_labels(identity),
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": APP_NAME,
        LABEL_PREFIX + "dag-id": label_value(identity.dag_id),
        LABEL_PREFIX + "task-id": label_value(identity.task_id),
        LABEL_PREFIX + "run-id": label_value(identity.run_id),
        LABEL_PREFIX + "try-number": str(identity.try_number),
    }
    # Airflow's -1 for "not mapped" is no valid label value (it must start with a letter or digit):
    # unmapped runs carry no map-index label, and `-l '!kubedbt.io/map-index'` finds them.
    if identity.map_index >= 0:
        labels[LABEL_PREFIX + "map-index"] = str(identity.map_index)
    return labels


def task_instance_selector(identity: RunIdentity) -> str:
    """A label selector for the objects of every try of the identity's task instance.

    Sanitised label values may, in principle, stand for more than one id: callers confirm a
    match with task_instance_annotations.
    """
    labels = run_labels(identity)
    keys = ["app.kubernetes.io/name", *(LABEL_PREFIX + k for k in ("dag-id", "task-id", "run-id"))]
    terms = [f"{key}={labels[key]}" for key in keys]
    map_index = LABEL_PREFIX + "map-index"
    terms.append(f"{map_index}={labels[map_index]}" if map_index in labels else f"!{map_index}")
    return ",".join(terms)


def task_instance_annotations(identity: RunIdentity) -> dict[str, str]:
    """The annotations every try of the identity's task instance carries, whatever its DAG run."""
    return {
        LABEL_PREFIX + "dag-id": identity.dag_id,
        LABEL_PREFIX + "task-id": identity.task_id,
        LABEL_PREFIX + "run-id": identity.run_id,
        LABEL_PREFIX + "map-index": str(identity.map_index),
    }


TRY_NUMBER_ANNOTATION = LABEL_PREFIX + "try-number"
DAG_RUN_KEY_ANNOTATION = LABEL_PREFIX + "dag-run-key"
# The watch's limits, in seconds, recorded on the Job so `kubectl dbt describe` judges a run that
# has not finished exactly as the operator's watch does.
STARTUP_TIMEOUT_ANNOTATION = LABEL_PREFIX + "startup-timeout"
EXECUTION_TIMEOUT_ANNOTATION = LABEL_PREFIX + "execution-timeout"
RESULTS_TIMEOUT_ANNOTATION = LABEL_PREFIX + "results-timeout"
# Set on the Job when kubedbt stops a run (task killed, execution_timeout): why, and when. The stop
# itself is an activeDeadlineSeconds the Job has already passed, so the Job controller deletes the
# pod (dbt gets SIGINT through the launcher) and no replacement is ever started.
STOP_REASON_ANNOTATION = LABEL_PREFIX + "stop-reason"
STOP_REQUESTED_ANNOTATION = LABEL_PREFIX + "stop-requested-at"


def dag_run_key(start_date: str | None, clear_number: int | None) -> str:
    """What tells one start of a DAG run from another: its start date and clear number.

    Both are needed: clearing a task of a running DAG run keeps the run's start date.
    """
    return f"{start_date or '-'} clear {clear_number or 0}"


def run_annotations(identity: RunIdentity) -> dict[str, str]:
    """The identity's original, unsanitised values."""
    annotations = {
        **task_instance_annotations(identity),
        TRY_NUMBER_ANNOTATION: str(identity.try_number),
    }
    if identity.dag_run_key is not None:
        annotations[DAG_RUN_KEY_ANNOTATION] = identity.dag_run_key
    return annotations


def check_not_reserved(parameter: str, keys: list[str] | tuple[str, ...]) -> None:
    """Users may add labels and annotations, but not ones kubedbt relies on to find its objects."""
    for key in keys:
        if key.startswith(LABEL_PREFIX) or key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
        ):
            raise InvalidSpecError(parameter, f"key {key!r} is reserved for kubedbt")
