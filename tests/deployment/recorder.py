"""A recorder of every kubedbt Job and pod in a namespace, for the whole length of a fault test.

Faults make objects come and go: a Job deleted and created again has a new uid, a pod deleted
mid-run vanishes from the API seconds later. Reading the namespace at the end of a test would miss
both, so the recorder watches from the start (in a thread, with the admin's sync client) and keeps
the last state of everything it saw, with the time it saw it deleted.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

SELECTOR = "app.kubernetes.io/name=kubedbt"
WATCH_SLICE = 5  # seconds: how quickly a watch notices it should stop


@dataclass
class Seen:
    """The last state of one object and when (if) it was deleted."""

    obj: dict[str, Any]
    deleted_at: float | None = None


@dataclass
class Recorder:
    """Jobs and pods of one namespace by uid, as watched since `start()`."""

    api_client: client.ApiClient
    namespace: str
    jobs: dict[str, Seen] = field(default_factory=dict)
    pods: dict[str, Seen] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Recorder:
        batch, core = client.BatchV1Api(self.api_client), client.CoreV1Api(self.api_client)
        for method, store in (
            (batch.list_namespaced_job, self.jobs),
            (core.list_namespaced_pod, self.pods),
        ):
            thread = threading.Thread(target=self._follow, args=(method, store), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WATCH_SLICE * 3)

    def _follow(self, method: Callable[..., Any], store: dict[str, Seen]) -> None:
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listing = method(self.namespace, label_selector=SELECTOR)
                    for item in listing.items:
                        obj = self.api_client.sanitize_for_serialization(item)
                        self._record("ADDED", obj, store)
                    version = listing.metadata.resource_version
                for event in watch.Watch().stream(
                    method, self.namespace, label_selector=SELECTOR, resource_version=version,
                    timeout_seconds=WATCH_SLICE, allow_watch_bookmarks=True,
                ):  # fmt: skip
                    obj = event["raw_object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._record(event["type"], obj, store)
            except ApiException as e:
                if e.status == 410:
                    version = None
                else:
                    time.sleep(1)
            except Exception:  # the API server is down (a test's fault): go on when it is back
                time.sleep(1)

    def _record(self, event_type: str, obj: dict[str, Any], store: dict[str, Seen]) -> None:
        uid = obj["metadata"]["uid"]
        with self._lock:
            seen = store.setdefault(uid, Seen(obj))
            seen.obj = obj
            if event_type == "DELETED":
                seen.deleted_at = time.time()

    # --- what the tests ask ---

    def jobs_of(self, dag_id: str, run_id: str) -> list[Seen]:
        """The Jobs of one DAG run, deleted ones included."""
        return self._of(self.jobs, dag_id, run_id)

    def pods_of(self, dag_id: str, run_id: str) -> list[Seen]:
        """The pods of one DAG run, deleted ones included."""
        return self._of(self.pods, dag_id, run_id)

    def _of(self, store: dict[str, Seen], dag_id: str, run_id: str) -> list[Seen]:
        with self._lock:
            return [
                s
                for s in store.values()
                if _annotation(s.obj, "dag-id") == dag_id and _annotation(s.obj, "run-id") == run_id
            ]

    def dbt_running(self, dag_id: str, run_id: str) -> Seen | None:
        """A pod of the DAG run in which dbt runs now."""
        for seen in self.pods_of(dag_id, run_id):
            if seen.deleted_at is None and "running" in dbt_state(seen.obj):
                return seen
        return None

    def dbt_intervals(self, dag_id: str, run_id: str) -> list[tuple[str, float, float]]:
        """(pod, dbt started, dbt ended or pod deleted or now) for every pod dbt ran in."""
        intervals = []
        for seen in self.pods_of(dag_id, run_id):
            state = dbt_state(seen.obj)
            started = (state.get("running") or state.get("terminated") or {}).get("startedAt")
            if not started:
                continue
            finished = (state.get("terminated") or {}).get("finishedAt")
            end = epoch(finished) if finished else (seen.deleted_at or time.time())
            intervals.append((seen.obj["metadata"]["name"], epoch(started), end))
        return sorted(intervals, key=lambda i: i[1])

    def overlapping_dbt(self, dag_id: str, run_id: str) -> list[tuple[str, str]]:
        """Pairs of pods of the DAG run whose dbt ran at the same time."""
        intervals = self.dbt_intervals(dag_id, run_id)
        return [
            (a[0], b[0]) for i, a in enumerate(intervals) for b in intervals[i + 1 :] if b[1] < a[2]
        ]


def _annotation(obj: dict[str, Any], key: str) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get("kubedbt.io/" + key)


def dbt_state(pod: dict[str, Any]) -> dict[str, Any]:
    """The dbt container's state in a pod's last recorded status."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == "dbt":
            return dict(status.get("state") or {})
    return {}


def epoch(text: str) -> float:
    """An API timestamp as epoch seconds."""
    return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
