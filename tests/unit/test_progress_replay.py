"""RunProgress replayed over event sequences recorded from the real cluster, on a fake clock.

tests/unit/fixtures/events/*.json are what a run's subscription observed on the local cluster
(re-recorded with `python -m tests.cluster.record_events`): the lists, then every event of the
run's Job, pods and results ConfigMap, each with the second it arrived. `replay` drives the
progress exactly as the watch loop does: decide, then sleep until the next observation or the
decision's wake_at, whichever comes first. The faults the cluster cannot stage on demand (a
trigger rebuilt mid-run, a watch that missed events and relisted, a 410 relist that finds the
Job gone, a pod stuck terminating) are made by editing the recorded sequences.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from kubedbt.core.progress import Ending, RunProgress, job_finished

EVENTS = Path(__file__).parent / "fixtures" / "events"
Observation = list[Any]  # [arrival time, kind, event type, payload]


def recorded(name: str) -> list[Observation]:
    observations: list[Observation] = json.loads((EVENTS / f"{name}.json").read_text())[
        "observations"
    ]
    return observations


def replay(
    observations: list[Observation], progress: RunProgress, *, until: float | None = None
) -> tuple[Ending | None, float]:
    """The ending the watch loop would reach over `observations`, and the moment it would."""
    now = observations[0][0]
    for arrival, kind, event_type, payload in observations:
        ending, now = _sleep_until(progress, now, arrival)
        if ending is not None:
            return ending, now
        progress.observe(kind, event_type, copy.deepcopy(payload))
        decision = progress.decide(now)
        if decision.stop:  # as the watch does: stop the run, then go on watching it
            progress.stop_sent_at = now
        if decision.ending is not None:
            return decision.ending, now
    return _sleep_until(progress, now, until if until is not None else now)


def _sleep_until(progress: RunProgress, now: float, arrival: float) -> tuple[Ending | None, float]:
    """Follow the decision's wake-ups until `arrival` (the next observation)."""
    for _ in range(100):  # bounded: each wake-up either ends the run or moves the clock on
        decision = progress.decide(now)
        if decision.ending is not None:
            return decision.ending, now
        if decision.stop:
            progress.stop_sent_at = now
            continue
        if decision.wake_at is None or decision.wake_at > arrival:
            return None, arrival
        now = max(now, decision.wake_at)
    raise AssertionError("the decision keeps waking without moving on")


def _index(observations: list[Observation], predicate: Any) -> int:
    return next(i for i, o in enumerate(observations) if predicate(o))


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _job_complete(o: Observation) -> bool:
    return bool(o[1] == "job" and o[2] != "LIST" and job_finished(o[3]))


def _dbt_running(o: Observation) -> bool:
    if o[1] != "pod" or o[2] == "LIST":
        return False
    statuses = (o[3].get("status") or {}).get("containerStatuses") or []
    return any("running" in (s.get("state") or {}) for s in statuses)


def _snapshot(observations: list[Observation], upto: int) -> list[Observation]:
    """What a trigger rebuilt after observation `upto` lists: the state then, as three lists."""
    state: dict[str, dict[str, Any]] = {"job": {}, "pod": {}, "configmap": {}}
    for _, kind, event_type, payload in observations[: upto + 1]:
        if event_type == "LIST":
            state[kind] = {o["metadata"]["name"]: o for o in payload}
        elif event_type == "DELETED":
            state[kind].pop(payload["metadata"]["name"], None)
        else:
            state[kind][payload["metadata"]["name"]] = payload
    at = observations[upto][0]
    return [[at, kind, "LIST", list(objects.values())] for kind, objects in state.items()]


def test_a_successful_run_finishes_when_its_job_completes() -> None:
    events = recorded("success")
    ending, at = replay(events, RunProgress(startup_timeout=60))
    assert ending == "finished"
    assert at == events[_index(events, _job_complete)][0]


@pytest.mark.parametrize("after", [0.0, 0.5, 0.9])
def test_a_trigger_rebuilt_mid_run_decides_the_same(after: float) -> None:
    events = recorded("success")
    running, complete = _index(events, _dbt_running), _index(events, _job_complete)
    cut = running + int((complete - running) * after)
    rebuilt = _snapshot(events, cut) + events[cut + 1 :]
    # Rebuilt long after the start with a short startup_timeout: dbt's state decides, not the age.
    ending, at = replay(rebuilt, RunProgress(startup_timeout=1))
    assert (ending, at) == replay(events, RunProgress(startup_timeout=60))


def test_a_watch_that_missed_events_relists_and_decides_the_same() -> None:
    events = recorded("success")
    start = _index(events, _dbt_running)
    end = _index(events, _job_complete)
    relisted = [*events[:start], *_snapshot(events, end)]  # everything between them was missed
    assert replay(relisted, RunProgress(startup_timeout=60))[0] == "finished"


def test_a_start_that_takes_too_long_ends_at_the_startup_timeout() -> None:
    events = recorded("success")
    before_dbt = events[: _index(events, _dbt_running)]
    job = next(o[3] for o in events if o[1] == "job" and o[2] != "LIST")
    pods = [o[3] for o in events if o[1] == "pod" and o[2] != "LIST"]
    created = max(_epoch(obj["metadata"]["creationTimestamp"]) for obj in [job, *pods])
    ending, at = replay(before_dbt, RunProgress(startup_timeout=5), until=created + 60)
    assert ending == "startup"
    assert at == created + 5


def test_the_execution_timeout_counts_from_the_jobs_creation() -> None:
    events = recorded("success")
    job = next(o[3] for o in events if o[1] == "job" and o[2] != "LIST")
    progress = RunProgress(startup_timeout=60, execution_timeout=4)
    ending, _ = replay(events, progress)
    # The stop is asked for at the timeout; the run then ends as its Job does.
    assert progress.stop_sent_at == _epoch(job["metadata"]["creationTimestamp"]) + 4
    assert ending == "finished"


def _pod_done(observation: Observation) -> bool:
    _, kind, event_type, pod = observation
    return kind == "pod" and event_type != "LIST" and pod["status"].get("phase") == "Succeeded"


def test_a_finished_job_waits_for_the_upload_then_gives_up_after_results_timeout() -> None:
    events = recorded("success")
    # The upload is never marked, and the pod's end is never seen (its watch lags, say).
    never_marked = [
        o for o in events if not (o[1] == "configmap" and o[2] == "MODIFIED") and not _pod_done(o)
    ]
    end = never_marked[_index(never_marked, _job_complete)]
    ended = max(_epoch(c["lastTransitionTime"]) for c in end[3]["status"]["conditions"])
    progress = RunProgress(startup_timeout=60, results_timeout=30)
    ending, at = replay(never_marked, progress, until=ended + 60)
    assert ending == "finished"
    assert at == ended + 30


def test_an_ended_pod_has_no_upload_to_wait_for() -> None:
    # The uploader has exited with the pod: what it patched is read at the end, nothing can come.
    events = recorded("success")
    never_marked = [o for o in events if not (o[1] == "configmap" and o[2] == "MODIFIED")]
    ending, at = replay(never_marked, RunProgress(startup_timeout=60, results_timeout=30))
    assert ending == "finished"
    first_seen_done = max(
        never_marked[_index(never_marked, _job_complete)][0],
        next(o[0] for o in never_marked if _pod_done(o)),
    )
    assert at == first_seen_done


def test_a_job_deleted_mid_run_ends_it_at_the_deletion() -> None:
    events = recorded("job_deleted")
    deleted = _index(events, lambda o: o[1] == "job" and o[2] == "DELETED")
    ending, at = replay(events, RunProgress(startup_timeout=60))
    assert ending == "job_deleted"
    assert at == events[deleted][0]


def test_a_relist_after_410_that_finds_the_job_gone_ends_the_run() -> None:
    events = recorded("job_deleted")
    deleted = _index(events, lambda o: o[1] == "job" and o[2] == "DELETED")
    relisted = [*events[:deleted], [events[deleted][0], "job", "LIST", []]]
    assert replay(relisted, RunProgress(startup_timeout=60))[0] == "job_deleted"


def test_a_suspended_job_ends_startup_timeout_after_its_suspension() -> None:
    events = recorded("suspended")
    job = next(o[3] for o in reversed(events) if o[1] == "job" and o[2] != "LIST")
    since = next(
        _epoch(c["lastTransitionTime"])
        for c in job["status"]["conditions"]
        if c["type"] == "Suspended"
    )
    ending, at = replay(events, RunProgress(startup_timeout=15), until=since + 60)
    assert ending == "suspended"
    assert at == since + 15


def test_an_evicted_pods_replacement_runs_to_the_end() -> None:
    events = recorded("evicted")
    pods = {o[3]["metadata"]["name"] for o in events if o[1] == "pod" and o[2] != "LIST"}
    assert len(pods) == 2, "the recording has the evicted pod and its replacement"
    ending, _ = replay(events, RunProgress(startup_timeout=60))
    assert ending == "finished"


def test_a_pod_stuck_terminating_ends_startup_timeout_after_its_deletion() -> None:
    events = recorded("job_deleted")
    running = _index(events, _dbt_running)
    stuck = copy.deepcopy(events[running])
    deletion = _epoch(stuck[3]["metadata"]["creationTimestamp"]) + 30
    stuck[3]["metadata"]["deletionTimestamp"] = datetime.datetime.fromtimestamp(
        deletion, datetime.timezone.utc
    ).isoformat()
    stuck[0] += 1
    progress = RunProgress(startup_timeout=15)
    ending, at = replay([*events[: running + 1], stuck], progress, until=deletion + 60)
    assert ending == "terminating"
    assert at == deletion + 15
