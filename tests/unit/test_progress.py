"""The run's progress decided from recorded statuses, at chosen moments of a fake clock.

Statuses come from tests/unit/fixtures/status (recorded from the real cluster). A run still in
progress is its recorded Job with the terminal conditions taken off: the Job as it stood before
it ended.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from kubedbt.core import naming
from kubedbt.core.live import PROGRESS_ANNOTATION, RunningNode, Snapshot
from kubedbt.core.progress import Decision, RunProgress, condition_since
from kubedbt.core.results import UPLOAD_STATUS
from tests.unit.test_classify import recorded

STARTUP = 120.0


def epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def in_progress(job: dict[str, Any]) -> dict[str, Any]:
    job = copy.deepcopy(job)
    job["status"].pop("conditions", None)
    return job


def listed(
    name: str, *, finished: bool = False, pods: list[dict[str, Any]] | None = None
) -> RunProgress:
    data = recorded(name)
    progress = RunProgress(startup_timeout=STARTUP)
    progress.listed("job", [data["job"] if finished else in_progress(data["job"])])
    progress.listed("pod", data["pods"] if pods is None else pods)
    progress.listed("configmap", [])
    return progress


def created(obj: dict[str, Any]) -> float:
    return epoch(obj["metadata"]["creationTimestamp"])


def test_nothing_is_decided_before_every_list() -> None:
    data = recorded("unschedulable")
    progress = RunProgress(startup_timeout=STARTUP)
    long_after = created(data["job"]) + 10 * STARTUP
    progress.listed("job", [in_progress(data["job"])])
    assert progress.decide(long_after).ending is None  # the pods are not read yet
    progress.listed("pod", data["pods"])
    assert progress.decide(long_after).ending is None  # nor the ConfigMaps
    progress.listed("configmap", [])
    assert progress.decide(long_after).ending == "startup"


def test_a_trigger_rebuilt_long_after_startup_keeps_waiting_on_a_running_dbt() -> None:
    # The evicted run's replacement pod, recorded while dbt was running in it.
    data = recorded("evicted")
    running = [p for p in data["pods"] if p["status"]["phase"] == "Running"]
    assert running, "the recording has the replacement pod running"
    progress = listed("evicted", pods=running)
    decision = progress.decide(created(data["job"]) + 24 * 3600)
    assert decision.ending is None
    assert decision.wake_at is None  # no deadline left: only events wake the loop


def test_startup_counts_from_the_newest_pod() -> None:
    data = recorded("evicted")
    progress = RunProgress(startup_timeout=STARTUP)
    progress.listed("job", [in_progress(data["job"])])
    replacement = max(data["pods"], key=created)
    waiting = copy.deepcopy(replacement)
    waiting["status"]["containerStatuses"] = [
        {"name": "dbt", "state": {"waiting": {"reason": "ContainerCreating"}}}
    ]
    progress.listed("pod", [p for p in data["pods"] if p is not replacement] + [waiting])
    progress.listed("configmap", [])
    due = created(replacement) + STARTUP
    assert due > created(data["job"]) + STARTUP  # the replacement came later than the Job
    assert progress.decide(due - 1) == Decision(None, wake_at=due)
    assert progress.decide(due).ending == "startup"


def test_unschedulable_times_out_at_startup() -> None:
    data = recorded("unschedulable")
    progress = listed("unschedulable")
    due = max(created(data["job"]), *(created(p) for p in data["pods"])) + STARTUP
    assert progress.decide(due - 0.5).wake_at == due
    assert progress.decide(due).ending == "startup"


@pytest.mark.parametrize("name", ["success", "test_failure", "parse_error", "oom_killed"])
def test_a_finished_job_ends_the_run_whatever_the_clock(name: str) -> None:
    data = recorded(name)
    progress = listed(name, finished=True)
    assert progress.decide(created(data["job"])).ending == "finished"
    assert progress.decide(created(data["job"]) + 10**6).ending == "finished"


def test_a_job_event_that_finishes_it_ends_the_run() -> None:
    data = recorded("success")
    progress = listed("success")
    assert progress.decide(created(data["job"]) + 1).ending is None
    progress.changed("job", "MODIFIED", data["job"])
    assert progress.decide(created(data["job"]) + 1).ending == "finished"


def test_an_image_that_cannot_exist_ends_at_once() -> None:
    data = recorded("invalid_image")
    assert listed("invalid_image").decide(created(data["job"])).ending == "cannot_start"


def test_a_job_deleted_mid_run_ends_the_run() -> None:
    data = recorded("evicted")
    progress = listed("evicted")
    now = created(data["job"]) + 30
    assert progress.decide(now).ending is None
    progress.changed("job", "DELETED", in_progress(data["job"]))
    assert progress.decide(now).ending == "job_deleted"


def test_a_job_missing_from_its_list_was_deleted() -> None:
    data = recorded("success")
    progress = RunProgress(startup_timeout=STARTUP)
    progress.listed("job", [])
    progress.listed("pod", data["pods"])
    progress.listed("configmap", [])
    assert progress.decide(created(data["job"])).ending == "job_deleted"


def test_the_execution_timeout_counts_from_the_job_and_comes_first_when_earlier() -> None:
    data = recorded("unschedulable")
    start = created(data["job"])
    progress = RunProgress(startup_timeout=STARTUP, execution_timeout=30)
    progress.listed("job", [in_progress(data["job"])])
    progress.listed("pod", data["pods"])
    progress.listed("configmap", [])
    assert progress.decide(start + 10).wake_at == start + 30
    # The execution timeout stops the run; the run ends as its Job does, with dbt's results.
    stop = progress.decide(start + 30)
    assert (stop.ending, stop.stop) == (None, True)


def test_a_run_still_going_long_after_its_stop_is_given_up_on() -> None:
    data = recorded("unschedulable")
    start = created(data["job"])
    progress = RunProgress(startup_timeout=10 * STARTUP, execution_timeout=30)
    progress.listed("job", [in_progress(data["job"])])
    progress.listed("pod", data["pods"])
    progress.listed("configmap", [])
    assert progress.decide(start + 30).stop
    progress.stop_sent_at = start + 30
    give_up = start + 30 + progress.grace_period() + 60
    assert progress.decide(start + 31) == Decision(None, wake_at=give_up)
    assert progress.decide(give_up).ending == "execution"


def test_a_stop_recorded_on_the_job_is_what_any_watch_counts_from() -> None:
    data = recorded("unschedulable")
    start = created(data["job"])
    job = in_progress(data["job"])
    stopped_at = datetime.datetime.fromtimestamp(start + 5, datetime.timezone.utc)
    job["metadata"].setdefault("annotations", {}).update(
        {
            naming.STOP_REASON_ANNOTATION: "task-killed",
            naming.STOP_REQUESTED_ANNOTATION: stopped_at.isoformat(timespec="seconds"),
        }
    )
    # A trigger rebuilt after the stop (no execution timeout of its own) never stops it again.
    progress = RunProgress(startup_timeout=STARTUP, execution_timeout=2)
    progress.listed("job", [job])
    progress.listed("pod", data["pods"])
    progress.listed("configmap", [])
    assert progress.grace_period() == float(
        job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )
    deadline = start + 5 + progress.grace_period() + 60
    assert progress.decide(start + 10) == Decision(None, wake_at=min(deadline, start + STARTUP))
    assert not progress.decide(deadline).stop


def test_deleted_pods_keep_their_last_state_through_a_relist() -> None:
    data = recorded("evicted")
    progress = listed("evicted")
    evicted = min(data["pods"], key=created)
    progress.listed("pod", [p for p in data["pods"] if p is not evicted])
    assert evicted["metadata"]["name"] in progress.pods
    assert progress.ever_started


def test_an_unreadable_stop_annotation_is_no_stop() -> None:
    data = recorded("unschedulable")
    job = in_progress(data["job"])
    job["metadata"].setdefault("annotations", {})[naming.STOP_REQUESTED_ANNOTATION] = "yesterday"
    progress = RunProgress(startup_timeout=STARTUP)
    progress.listed("job", [job])
    assert progress.stop_requested_at() is None


def test_a_stopped_runs_upload_is_awaited_for_the_grace_period_from_the_stop() -> None:
    # Before Kubernetes 1.31 a Job is marked failed at its deadline, before its pod has ended.
    data = recorded("success")
    job = data["job"]
    ended = condition_since(job, "Complete")
    assert ended is not None
    stopped = datetime.datetime.fromtimestamp(ended - 1, datetime.timezone.utc)
    job["metadata"].setdefault("annotations", {})[naming.STOP_REQUESTED_ANNOTATION] = (
        stopped.isoformat()
    )
    pending = {**data["configmap"], "metadata": {**data["configmap"]["metadata"]}}
    pending["metadata"]["annotations"] = {UPLOAD_STATUS: "pending"}
    running = [{**p, "status": {**p["status"], "phase": "Running"}} for p in data["pods"]]
    progress = RunProgress(startup_timeout=STARTUP, results_timeout=20)
    progress.listed("job", [job])
    progress.listed("pod", running)
    progress.listed("configmap", [pending])
    grace = progress.grace_period()
    assert progress.decide(ended) == Decision(None, wake_at=ended - 1 + grace + 20)


# --- the sidecar's live tally, read from the ConfigMap (written by the pod: untrusted) ---


def _configmap(progress: object, status: str = "pending") -> dict[str, Any]:
    annotations: dict[str, Any] = {UPLOAD_STATUS: status}
    if progress is not None:
        annotations[PROGRESS_ANNOTATION] = progress
    return {"metadata": {"name": "run-results", "annotations": annotations}}


def test_the_live_tally_is_read_from_the_configmap() -> None:
    snapshot = Snapshot(
        done={"success": 3}, total=28, running=(RunningNode("model.a.b", 1.0e9),), running_count=1
    )
    progress = listed("success")
    assert progress.live is None
    progress.changed("configmap", "MODIFIED", _configmap(snapshot.encode()))
    assert progress.live == snapshot
    progress.listed("configmap", [_configmap(Snapshot(done={"success": 4}).encode())])
    assert progress.live == Snapshot(done={"success": 4})


@pytest.mark.parametrize(
    "hostile",
    [
        "x" * 1_000_000,
        "{not json",
        '{"done": {"success": "many"}}',
        '{"done": {}, "running": [["model.a", NaN]]}',
        "[1, 2, 3]",
        None,
    ],
)
def test_a_hostile_progress_annotation_leaves_the_watch_as_it_was(hostile: object) -> None:
    good = Snapshot(done={"success": 3}, total=28)
    progress = listed("success")
    progress.changed("configmap", "MODIFIED", _configmap(good.encode()))
    before = progress.decide(1e10)
    progress.changed("configmap", "MODIFIED", _configmap(hostile))
    assert progress.live == good  # the last readable tally stays
    assert progress.upload_status == "pending"
    assert progress.decide(1e10) == before
