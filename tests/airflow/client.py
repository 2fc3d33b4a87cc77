"""A small client of Airflow 3's public REST API (/api/v2) for tests that drive a real deployment.

The fault tests treat the deployment of tests/airflow/airflow.sh as a black box: they trigger DAG
runs, read task states, logs and XComs, and act as a person would (mark a task failed, clear it)
through the same API as any user, so nothing here imports Airflow. Every wait has a deadline and,
when it gives up, says the last state it saw.

Authentication: the deployment runs SimpleAuthManager with `simple_auth_manager_all_admins`, whose
`GET /auth/token` hands anyone an admin JWT; the client fetches one and fetches a new one on a 401.
"""

from __future__ import annotations

import datetime
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

JSON = dict[str, Any]
T = TypeVar("T")

# States after which a task instance or a run does not move on by itself.
TASK_FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
RUN_FINISHED = frozenset({"success", "failed"})


def default_url() -> str:
    """KUBEDBT_AIRFLOW_URL, else the api-server airflow.sh starts (KUBEDBT_AIRFLOW_PORT, 8080)."""
    port = os.environ.get("KUBEDBT_AIRFLOW_PORT", "8080")
    return os.environ.get("KUBEDBT_AIRFLOW_URL", f"http://127.0.0.1:{port}")


class AirflowApiError(Exception):
    """The API answered a request with an error status."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {detail[:500]}")
        self.status = status


class WaitTimeoutError(TimeoutError):
    """A wait reached its deadline; the message names the last state seen."""


class AirflowClient:
    """The REST API of one Airflow deployment, as an admin."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        request_timeout: float = 30.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.base_url = (base_url or default_url()).rstrip("/")
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self._token: str | None = None

    # --- health and DAGs ---

    def health(self) -> JSON:
        """The api-server's health report (no authentication needed)."""
        report: JSON = self._request("GET", "/api/v2/monitor/health", authenticated=False)
        return report

    def healthy(self) -> bool:
        """Whether the api-server answers and reports every other component healthy."""
        try:
            report = self.health()
        except (OSError, AirflowApiError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((report.get(part) or {}).get("status") == "healthy" for part in parts)

    def dag(self, dag_id: str) -> JSON:
        """The DAG as the API lists it (404 until the dag-processor has parsed its file)."""
        found: JSON = self._request("GET", f"/api/v2/dags/{_q(dag_id)}")
        return found

    def wait_for_dag(self, dag_id: str, *, timeout: float) -> JSON:
        """Wait until the DAG is parsed and active; a timeout lists the current import errors."""

        def check() -> tuple[JSON | None, str]:
            try:
                found = self.dag(dag_id)
            except AirflowApiError as e:
                if e.status != 404:
                    raise
                return None, "not parsed yet (404)"
            if found.get("is_stale"):
                return None, "stale (its file no longer defines it)"
            return found, "active"

        try:
            return self._wait(f"DAG {dag_id}", check, timeout)
        except WaitTimeoutError as e:
            raise WaitTimeoutError(f"{e}; import errors: {self._import_errors()}") from None

    # --- runs ---

    def set_paused(self, dag_id: str, *, paused: bool) -> None:
        """Pause or unpause the DAG (this deployment creates DAGs paused)."""
        self._request("PATCH", f"/api/v2/dags/{_q(dag_id)}", body={"is_paused": paused})

    def dag_runs(self, dag_id: str) -> list[JSON]:
        """The DAG's runs, newest first."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns"
        found: JSON = self._request("GET", path, params={"order_by": "-run_after"})
        return list(found.get("dag_runs") or [])

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        logical_date: datetime.datetime | None = None,
    ) -> str:
        """Trigger a run of the DAG now and return its run id.

        Without `logical_date` the run has none (templates that read `ds` then fail).
        """
        when = logical_date.isoformat() if logical_date is not None else None
        body: JSON = {"logical_date": when, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        run: JSON = self._request("POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", body=body)
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> JSON:
        """The DAG run (its `state` among queued, running, success, failed)."""
        run: JSON = self._request("GET", _run_path(dag_id, run_id))
        return run

    def wait_for_dag_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float,
        states: Collection[str] = RUN_FINISHED,
    ) -> JSON:
        """Wait until the run is in one of `states`; one finished in none of them fails at once."""

        def check() -> tuple[JSON | None, str]:
            run = self.dag_run(dag_id, run_id)
            state = str(run["state"])
            if state in states:
                return run, state
            if state in RUN_FINISHED:
                raise AssertionError(f"run {dag_id}/{run_id} finished {state}, not in {states}")
            return None, state

        return self._wait(f"run {dag_id}/{run_id} to be {sorted(states)}", check, timeout)

    def delete_dag_run(self, dag_id: str, run_id: str) -> None:
        """Delete the run and its task instances. Airflow refuses to delete a queued or running
        run (409), so such a run is marked failed first, which also stops its running tasks."""
        path = _run_path(dag_id, run_id)
        try:
            self._request("DELETE", path)
        except AirflowApiError as e:
            if e.status != 409:
                raise
            self._request("PATCH", path, body={"state": "failed"})
            self._request("DELETE", path)

    # --- connections ---

    def set_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """Define the connection (host, port, login, password, schema, extra as a dict), replacing
        one of the same id, as a person does under Admin > Connections."""
        body: JSON = {"connection_id": conn_id, "conn_type": conn_type, **fields}
        if isinstance(body.get("extra"), Mapping):
            body["extra"] = json.dumps(body["extra"])
        try:
            self._request("POST", "/api/v2/connections", body=body)
        except AirflowApiError as e:
            if e.status != 409:
                raise
            self._request("PATCH", f"/api/v2/connections/{_q(conn_id)}", body=body)

    def delete_connection(self, conn_id: str) -> None:
        """Delete the connection; one that is not there is no error."""
        try:
            self._request("DELETE", f"/api/v2/connections/{_q(conn_id)}")
        except AirflowApiError as e:
            if e.status != 404:
                raise

    # --- task instances ---

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> JSON:
        """The task instance: `state`, `try_number`, `id` (what its process title shows)..."""
        path = f"{_ti_path(dag_id, run_id, task_id)}{'' if map_index < 0 else f'/{map_index}'}"
        ti: JSON = self._request("GET", path)
        return ti

    def wait_for_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: Collection[str],
        *,
        timeout: float,
        map_index: int = -1,
    ) -> JSON:
        """Wait until the task instance is in one of `states` (None is Airflow's "no status" yet).

        A task instance that finished in another state fails the wait at once.
        """
        wanted = {str(s) for s in states}

        def check() -> tuple[JSON | None, str]:
            ti = self.task_instance(dag_id, run_id, task_id, map_index)
            state = str(ti.get("state"))
            if state in wanted:
                return ti, state
            if state in TASK_FINISHED:
                raise AssertionError(
                    f"task {dag_id}/{run_id}/{task_id} finished {state} (try {ti['try_number']}),"
                    f" not in {sorted(wanted)}"
                )
            return None, f"{state} (try {ti['try_number']})"

        what = f"task {dag_id}/{run_id}/{task_id} to be {sorted(wanted)}"
        return self._wait(what, check, timeout)

    def set_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, map_index: int = -1
    ) -> None:
        """Mark the task instance success, failed or skipped, as a person does in the UI."""
        path = f"{_ti_path(dag_id, run_id, task_id)}{'' if map_index < 0 else f'/{map_index}'}"
        self._request("PATCH", path, body={"new_state": state})

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> None:
        """Clear the task instance whatever its state, so that it runs again as a new try."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [task_id],
            "only_failed": False,
            "reset_dag_runs": True,
        }
        cleared: JSON = self._request(
            "POST", f"/api/v2/dags/{_q(dag_id)}/clearTaskInstances", body=body
        )
        if not cleared.get("task_instances"):
            raise LookupError(f"no task instance {dag_id}/{run_id}/{task_id} to clear: {cleared}")

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> str:
        """The log of one try as plain text: one line per record, `time level logger: event k=v`."""
        path = f"{_ti_path(dag_id, run_id, task_id)}/logs/{try_number}"
        params = {"full_content": "true", "map_index": str(map_index)}
        found: JSON = self._request("GET", path, params=params)
        return "\n".join(_log_line(record) for record in found.get("content") or [])

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """The XCom value as stored: JSON values (a returned dict, list, number) come as such."""
        path = f"{_ti_path(dag_id, run_id, task_id)}/xcomEntries/{_q(key)}"
        entry: JSON = self._request("GET", path, params={"map_index": str(map_index)})
        return entry["value"]

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """The task instance's extra links, by name, as the UI gets them."""
        found: JSON = self._request("GET", f"{_ti_path(dag_id, run_id, task_id)}/links")
        return dict(found.get("extra_links") or {})

    def asset_events(self, **filters: str) -> list[JSON]:
        """Asset events (source_dag_id=..., source_run_id=...), oldest first."""
        params = {"order_by": "timestamp", "limit": "100", **filters}
        found: JSON = self._request("GET", "/api/v2/assets/events", params=params)
        return list(found.get("asset_events") or [])

    # --- plumbing ---

    def _wait(self, what: str, check: Callable[[], tuple[T | None, str]], timeout: float) -> T:
        """Call `check` every poll_interval until it returns a result; an unreachable api-server
        (restarted by a test) counts as a state, not an error."""
        deadline = time.monotonic() + timeout
        last = "nothing seen yet"
        while True:
            try:
                found, last = check()
            except OSError as e:  # connection refused or reset, read timeout
                found, last = None, f"api-server unreachable: {e}"
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; {last}")
            time.sleep(self.poll_interval)

    def _import_errors(self) -> str:
        try:
            errors: JSON = self._request("GET", "/api/v2/importErrors")
        except (OSError, AirflowApiError) as e:
            return f"unknown ({e})"
        found = [
            f"{e['filename']}: {str(e['stack_trace']).strip().splitlines()[-1]}"
            for e in errors.get("import_errors") or []
        ]
        return "; ".join(found) or "none"

    def _auth_header(self, *, renew: bool = False) -> str:
        if self._token is None or renew:
            answer: JSON = self._request("GET", "/auth/token", authenticated=False)
            self._token = str(answer["access_token"])
        return f"Bearer {self._token}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: JSON | None = None,
        authenticated: bool = True,
        renew_token: bool = False,
    ) -> Any:
        url = self.base_url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if authenticated:
            headers["Authorization"] = self._auth_header(renew=renew_token)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            if e.code == 401 and authenticated and not renew_token:
                return self._request(method, path, params=params, body=body, renew_token=True)
            detail = e.read().decode(errors="replace")
            raise AirflowApiError(method, path, e.code, detail) from None
        return json.loads(raw) if raw else None


def _q(part: str) -> str:
    """One path segment: run ids hold ':' and '+'."""
    return urllib.parse.quote(part, safe="")


def _run_path(dag_id: str, run_id: str) -> str:
    return f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}"


def _ti_path(dag_id: str, run_id: str, task_id: str) -> str:
    return f"{_run_path(dag_id, run_id)}/taskInstances/{_q(task_id)}"


# Keys of a structured log record that are not its message, or that repeat the task instance.
_LOG_RECORD_KEYS = frozenset(
    {"timestamp", "level", "logger", "event", "filename", "lineno"}
    | {"dag_id", "run_id", "task_id", "map_index", "try_number", "ti_id"}
)


def _log_line(record: Any) -> str:
    if not isinstance(record, dict):
        return str(record)
    rest = {k: v for k, v in record.items() if k not in _LOG_RECORD_KEYS}
    extra = "".join(f" {k}={v}" for k, v in rest.items())
    head = f"{record.get('timestamp', '')} {record.get('level', '')}".strip()
    logger = f"{record['logger']}: " if record.get("logger") else ""
    return f"{head} {logger}{record.get('event', '')}{extra}".strip()
