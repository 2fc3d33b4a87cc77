"""DbtJobOperator: one dbt invocation of an Airflow task as one Kubernetes Job.

Used like KubernetesPodOperator: the DbtRunSpec parameters (image, namespace, env_vars,
container_resources, ...) are keyword arguments with KPO's names, the cluster is reached through
the cncf-kubernetes connection, and deferrable mode hands the wait to DbtJobTrigger so no worker
slot is held while dbt runs.

execute() validates everything before touching the cluster, creates (or, after a worker restart,
adopts) this try's Job and its results ConfigMap, pushes where to look to XCom, then waits: in the
triggerer when deferrable, here otherwise (streaming dbt's log into the task log).
execute_complete() turns the outcome into a return value, an AirflowException (worth a retry) or
an AirflowFailException (not).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal, get_args

from airflow.sdk import BaseOperator, Context, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.sdk.log import mask_secret

from kubedbt.airflow.events import RunEvent, run_event
from kubedbt.airflow.trigger import ConnectionArgs, DbtJobTrigger, TriggerArgs
from kubedbt.core import naming, results
from kubedbt.core.classify import RETRYABLE, OutcomeKind, classify
from kubedbt.core.defaults import CONFIGMAP_NAME, apply_defaults, parse_defaults
from kubedbt.core.errors import InvalidSpecError, KubedbtError
from kubedbt.core.naming import RunIdentity
from kubedbt.core.report import summary_lines
from kubedbt.core.spec import DbtRunSpec, field_names
from kubedbt.io.api_errors import KubeApiError
from kubedbt.io.kube import RunClient
from kubedbt.io.launch import Launched, launch_run
from kubedbt.io.retry import RetryPolicy
from kubedbt.io.watch import RunRef, WatchLimits, watch_run

RetryStrategy = Literal["failed_nodes", "full"]
OnFinishAction = Literal["delete_job", "delete_succeeded_job", "keep_job"]
SPEC_PARAMETERS: Final = frozenset(field_names())
# Commands `dbt retry` can resume; for the others every try reruns the full command.
RESUMABLE_COMMANDS: Final = frozenset({"build", "run", "test", "seed", "snapshot", "compile"})
# Outcomes after which the Job is deleted whatever on_finish_action says: nothing useful is left in
# it and its pod would otherwise keep pulling or waiting.
ABANDONED: Final = frozenset(
    {
        "startup_timeout",
        "execution_timeout",
        "image_invalid",
        "image_pull_failed",
        "container_config_error",
    }
)
SENSITIVE_NAME_PARTS: Final = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "PASS")
EXECUTION_MARGIN: Final = 10.0
# Seconds on_kill may take: Airflow's supervisor sends SIGKILL 5 s after its SIGTERM.
ON_KILL_BUDGET: Final = 4.0
# How long a deferred run may wait with neither execution_timeout nor active_deadline_seconds set,
# and the slack past the trigger's own deadlines before Airflow's deferral timeout fires.
MAX_DEFERRAL: Final = timedelta(days=7)
DEFER_MARGIN: Final = timedelta(minutes=10)


class DbtJobOperator(BaseOperator):
    """Run a dbt command in a Kubernetes Job and report dbt's own results.

    Every DbtRunSpec parameter is accepted by name (see the README's configuration reference);
    `pod_template_file` and `pod_template_dict` are KubernetesPodOperator's names for
    `pod_template`. Besides those:

    :param kubernetes_conn_id: the cncf-kubernetes connection (in-cluster, kubeconfig, context).
    :param cluster_context: kubeconfig context, overriding the connection's.
    :param config_file: kubeconfig path, overriding the connection's.
    :param in_cluster: use the pod's service account, overriding the connection's.
    :param deferrable: wait in the triggerer; defaults to [operators] default_deferrable.
    :param startup_timeout: seconds the pod may take to start dbt (scheduling, image pull).
    :param results_timeout: seconds to wait for the sidecar's upload once dbt has ended.
    :param retry_strategy: "failed_nodes" (try N+1 runs `dbt retry` on try N's results) or "full".
    :param on_finish_action: "delete_succeeded_job" (default), "delete_job" or "keep_job".
    :param push_run_results: also push the full run_results.json to XCom (it can be large).
    :param retryable_failures: override which failure kinds Airflow retries, e.g.
        {"tests_failed": True}; see the README's failure table.
    :param log_tail_lines: lines of dbt's log shown in the task log when a run fails.
    :param defaults_configmap: the namespace's ConfigMap of defaults (the helm chart's
        `kubedbt-defaults`) for parameters the DAG leaves unset; None to ignore it.
    """

    template_fields: Sequence[str] = (
        "command",
        "select",
        "exclude",
        "selector",
        "vars",
        "full_refresh",
        "target",
        "threads",
        "macro_args",
        "dbt_flags",
        "image",
        "cmds",
        "namespace",
        "env_vars",
        "labels",
        "annotations",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"vars": "json", "macro_args": "json"}
    ui_color = "#ff694a"

    def __init__(
        self,
        *,
        kubernetes_conn_id: str | None = "kubernetes_default",
        cluster_context: str | None = None,
        config_file: str | None = None,
        in_cluster: bool | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        startup_timeout: float = 300,
        results_timeout: float = 60,
        retry_strategy: RetryStrategy = "failed_nodes",
        on_finish_action: OnFinishAction = "delete_succeeded_job",
        push_run_results: bool = False,
        retryable_failures: Mapping[str, bool] | None = None,
        log_tail_lines: int = 50,
        pod_template_file: str | None = None,
        pod_template_dict: Mapping[str, Any] | None = None,
        defaults_configmap: str | None = CONFIGMAP_NAME,
        **kwargs: Any,
    ) -> None:
        spec_values = {name: kwargs.pop(name) for name in list(kwargs) if name in SPEC_PARAMETERS}
        super().__init__(**kwargs)
        if pod_template_file is not None and pod_template_dict is not None:
            raise InvalidSpecError(
                "pod_template_file", "give pod_template_file or pod_template_dict"
            )
        if pod_template_file is not None or pod_template_dict is not None:
            spec_values["pod_template"] = pod_template_file or pod_template_dict
        self.spec_parameters = sorted(spec_values)
        for name, value in spec_values.items():
            setattr(self, name, value)
        for name in self.template_fields:
            if not hasattr(self, name):
                setattr(self, name, _default(name))
        self.connection = ConnectionArgs(
            kubernetes_conn_id, cluster_context, config_file, in_cluster
        )
        self.deferrable = deferrable
        self.startup_timeout = _positive("startup_timeout", startup_timeout)
        self.results_timeout = _positive("results_timeout", results_timeout)
        self.retry_strategy = _choice("retry_strategy", retry_strategy, get_args(RetryStrategy))
        self.on_finish_action = _choice(
            "on_finish_action", on_finish_action, get_args(OnFinishAction)
        )
        self.push_run_results = push_run_results
        self.retryable_failures = _retryable_overrides(retryable_failures)
        self.log_tail_lines = log_tail_lines
        self.defaults_configmap = defaults_configmap
        self.api_retry_policy = RetryPolicy()
        self._running: tuple[str, str] | None = None
        # Validate now what templating cannot change, so a bad DAG fails at parse time.
        self._spec(early=True)

    # --- building the run ---

    def _spec_values(self, *, early: bool = False) -> dict[str, Any]:
        """The spec parameters as the DAG gave them (rendered, unless `early`)."""
        values: dict[str, Any] = {}
        for name in [*self.spec_parameters, *self.template_fields]:
            value = _plain(getattr(self, name, _default(name)))
            if early and name in self.template_fields and _templated(value):
                value = _default(name)
            if name == "env_vars" and isinstance(value, Mapping):
                value = {key: _env_value(item) for key, item in value.items()}
            values[name] = value
        if early and values.get("image") is None:
            # The image may come from the namespace's defaults, read at execute time.
            values["image"] = "defaults/placeholder"
        return values

    def _spec(self, *, early: bool = False) -> DbtRunSpec:
        return DbtRunSpec.from_mapping(self._spec_values(early=early))

    def _identity(self, context: Context) -> RunIdentity:
        ti = context["ti"]
        dag_run = context.get("dag_run")
        started = getattr(dag_run, "start_date", None)
        return RunIdentity(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=ti.map_index if ti.map_index is not None else -1,
            try_number=ti.try_number,
            dag_run_key=naming.dag_run_key(
                started.isoformat() if started is not None else None,
                getattr(dag_run, "clear_number", None),
            ),
        )

    def execute(self, context: Context) -> Any:
        """Validate, create or adopt this try's Job, then wait for it (here or deferred)."""
        identity = self._identity(context)
        launched, spec = self._run_async(self._launch(self._spec_values(), identity))
        self._running = (launched.run.job_name, launched.run.namespace)
        self._announce(context, launched)
        args = self._trigger_args(spec, launched.identity, launched.run.job_name)
        if self.deferrable:
            self.defer(
                trigger=DbtJobTrigger(**args.to_kwargs()),
                method_name="execute_complete",
                timeout=self._deferral_timeout(spec),
            )
        event = self._run_async(self._wait_here(args))
        return self.execute_complete(context, event)

    async def _launch(
        self, values: dict[str, Any], identity: RunIdentity
    ) -> tuple[Launched, DbtRunSpec]:
        """Apply the namespace's defaults, validate, and create (or adopt) this try's run."""
        async with self.connection.async_hook().get_conn() as api_client:
            client = RunClient(api_client, self.api_retry_policy)
            if self.defaults_configmap is not None and isinstance(values.get("namespace"), str):
                found = await client.read_configmap(self.defaults_configmap, values["namespace"])
                values = apply_defaults(values, parse_defaults(found), self.spec_parameters)
            spec = DbtRunSpec.from_mapping(values)  # InvalidSpecError: nothing created yet
            _mask_sensitive_env(spec)
            resume = self.retry_strategy == "failed_nodes" and spec.command in RESUMABLE_COMMANDS
            launched = await launch_run(
                client,
                spec,
                identity,
                resume=resume,
                log=self.log,
                annotations=self._limit_annotations(spec),
            )
            return launched, spec

    def _limit_annotations(self, spec: DbtRunSpec) -> dict[str, str]:
        """The watch's limits, on the Job for `kubectl dbt describe` to judge the run the same."""
        recorded = {
            naming.STARTUP_TIMEOUT_ANNOTATION: self.startup_timeout,
            naming.RESULTS_TIMEOUT_ANNOTATION: self.results_timeout,
            naming.EXECUTION_TIMEOUT_ANNOTATION: self._execution_timeout(spec),
        }
        return {key: f"{value:g}" for key, value in recorded.items() if value is not None}

    def _execution_timeout(self, spec: DbtRunSpec) -> float | None:
        """When the watch stops dbt: execution_timeout less the pod's grace period and a margin.

        dbt then has the whole grace period to cancel its queries and write its results, and the
        operator reports them before Airflow's own timeout would kill the task without them. A
        timeout shorter than twice that lead still lets dbt run for half of it.
        """
        if not isinstance(self.execution_timeout, timedelta):
            return None
        timeout = self.execution_timeout.total_seconds()
        lead = spec.termination_grace_period + EXECUTION_MARGIN
        return max(1.0, timeout - lead, timeout / 2)

    def _announce(self, context: Context, launched: Launched) -> None:
        job_name, namespace = launched.run.job_name, launched.run.namespace
        if launched.adopted_try is not None:
            verb = f"watching try {launched.adopted_try}'s"
        else:
            verb = "adopted the existing" if launched.run.adopted else "created"
        retry = " (dbt retry)" if launched.state_from else ""
        self.log.info("%s Job %s/%s%s", verb, namespace, job_name, retry)
        kubectl = f"kubectl -n {namespace} logs -f job/{job_name} -c dbt"
        self.log.info("follow it with: %s", kubectl)
        ti = context["ti"]
        ti.xcom_push(key="job_name", value=job_name)
        ti.xcom_push(key="namespace", value=namespace)
        ti.xcom_push(key="kubectl", value=kubectl)

    def _trigger_args(self, spec: DbtRunSpec, identity: RunIdentity, job_name: str) -> TriggerArgs:
        return TriggerArgs(
            run=RunRef(
                job_name=job_name,
                namespace=spec.namespace,
                configmap_name=naming.results_configmap_name(identity),
                selector=naming.selector_labels(identity),
            ),
            limits=WatchLimits(
                startup_timeout=self.startup_timeout,
                execution_timeout=self._execution_timeout(spec),
                results_timeout=self.results_timeout,
                log_tail_lines=self.log_tail_lines,
            ),
            memory_limit=(spec.container_resources.get("limits") or {}).get("memory"),
            connection=self.connection,
            retry=self.api_retry_policy,
        )

    def _deferral_timeout(self, spec: DbtRunSpec) -> timedelta:
        """The last line of defence: Airflow fails the task if the trigger is still waiting then.

        The trigger ends every run itself, at its deadlines or when its Job ends, so this only
        fires if something no test foresaw keeps it waiting.
        """
        budget = MAX_DEFERRAL
        if isinstance(self.execution_timeout, timedelta):
            budget = self.execution_timeout
        elif spec.active_deadline_seconds is not None:
            budget = timedelta(seconds=spec.active_deadline_seconds)
        return (
            budget + timedelta(seconds=self.startup_timeout + self.results_timeout) + DEFER_MARGIN
        )

    async def _wait_here(self, args: TriggerArgs) -> RunEvent:
        async with args.connection.informer(args.run.namespace, args.retry) as informer:
            result = await watch_run(
                informer,
                args.run,
                args.limits,
                on_log=lambda line: self.log.info("[dbt] %s", line),
                memory_limit=args.memory_limit,
            )
        return run_event(args.run.job_name, args.run.namespace, classify(result.evidence), result)

    # --- finishing ---

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Report the run, clean up per on_finish_action, and succeed or raise."""
        run: RunEvent = event  # type: ignore[assignment]
        self._running = None
        summary = run["summary"]
        if summary is not None:
            for line in summary_lines(summary):
                self.log.info("%s", line)
        if run["status"] != "success" and run["log_tail"]:
            self.log.info("last lines of dbt's log:\n%s", run["log_tail"])
        run_results = self._run_async(self._finish(run))
        ti = context["ti"]
        if run_results is not None:
            ti.xcom_push(key="run_results", value=run_results)
        if run["status"] == "success":
            self.log.info("dbt succeeded (Job %s/%s)", run["namespace"], run["job_name"])
            return summary
        ti.xcom_push(key="summary", value=summary)
        outcome = {"kind": run["kind"], "retryable": self._retryable(run), "reason": run["reason"]}
        ti.xcom_push(key="outcome", value=outcome)
        for line in run["evidence"]:
            self.log.info("evidence: %s", line)
        message = f"dbt run {run['namespace']}/{run['job_name']} failed: {run['reason']}"
        if self._retryable(run):
            raise AirflowException(message)
        raise AirflowFailException(message)

    def _retryable(self, run: RunEvent) -> bool:
        kind = run["kind"]
        if kind is None:
            return run["retryable"]
        return self.retryable_failures.get(kind, RETRYABLE[kind])

    async def _finish(self, run: RunEvent) -> dict[str, Any] | None:
        """Read the full run_results when asked for, then delete the Job if that is the policy."""
        succeeded = run["status"] == "success"
        delete = run["kind"] != "job_deleted" and (
            self.on_finish_action == "delete_job"
            or (self.on_finish_action == "delete_succeeded_job" and succeeded)
            or run["kind"] in ABANDONED
        )
        if not delete and not self.push_run_results:
            return None
        run_results = None
        async with self.connection.async_hook().get_conn() as api_client:
            client = RunClient(api_client, self.api_retry_policy)
            if self.push_run_results:
                name = run["job_name"] + naming.RESULTS_SUFFIX
                configmap = await client.read_configmap(name, run["namespace"])
                if configmap is not None:
                    run_results = results.decode(configmap).run_results
            if delete:
                await client.delete_job(run["job_name"], run["namespace"])
                self.log.info("deleted Job %s/%s", run["namespace"], run["job_name"])
        return run_results

    def on_kill(self) -> None:
        """Stop this try's run the way dbt wants to be stopped when the task is killed.

        Airflow gives on_kill a few seconds before SIGKILL, so it only asks: RunClient.stop_run
        has the Job controller stop the pod, the launcher interrupts dbt (SIGINT), dbt cancels its
        queries and writes run_results, and the sidecar uploads them for the next try to resume.
        """
        if self._running is None:
            return
        job_name, namespace = self._running

        async def stop() -> bool:
            async with self.connection.async_hook().get_conn() as api_client:
                client = RunClient(api_client, self.api_retry_policy.within(ON_KILL_BUDGET))
                return await client.stop_run(job_name, namespace, "task-killed")

        # on_kill may run inside execute's event loop (from a signal handler): use a fresh one.
        outcome: list[bool] = []
        worker = threading.Thread(target=lambda: outcome.append(asyncio.run(stop())), daemon=True)
        worker.start()
        worker.join(timeout=ON_KILL_BUDGET)
        if outcome and outcome[0]:
            self.log.info(
                "stopping Job %s/%s: dbt is interrupted and uploads what it finished "
                "(kubectl dbt describe %s -n %s)",
                namespace,
                job_name,
                job_name,
                namespace,
            )
        else:
            self.log.warning("could not stop Job %s/%s (gone, or no answer)", namespace, job_name)

    def _run_async(self, coroutine: Any) -> Any:
        # Raised outside the handlers, without a chain: the text says all, and the task log
        # prints every exception of a chain, with whatever a traceback's frames held.
        error: AirflowException
        try:
            return asyncio.run(coroutine)
        except KubedbtError as e:
            error = AirflowException(str(e)) if e.retryable else AirflowFailException(str(e))
        except KubeApiError as e:  # a request no step of the run wrapped; sanitized already
            error = AirflowException(f"a Kubernetes API request failed: {e}")
        raise error from None


def _default(name: str) -> Any:
    for item in dataclasses.fields(DbtRunSpec):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
            return None
    return None


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(_templated(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_templated(v) for v in value)
    return False


def _plain(value: Any) -> Any:
    """Kubernetes client models (V1Toleration, V1ResourceRequirements, ...) as API dicts."""
    if hasattr(value, "openapi_types") and hasattr(value, "to_dict"):
        from kubernetes.client import ApiClient

        return ApiClient().sanitize_for_serialization(value)
    if isinstance(value, list) and any(hasattr(v, "openapi_types") for v in value):
        return [_plain(v) for v in value]
    return value


def _env_value(value: Any) -> Any:
    """Native template rendering turns "5432" into 5432; env values are strings again here."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _mask_sensitive_env(spec: DbtRunSpec) -> None:
    """Tell Airflow's secret masker about env values whose names look like credentials."""
    for entry in spec.env_vars:
        name = entry["name"].upper()
        if "value" in entry and any(part in name for part in SENSITIVE_NAME_PARTS):
            mask_secret(entry["value"], entry["name"])


def _positive(parameter: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidSpecError(parameter, f"must be a positive number of seconds, got {value!r}")
    return float(value)


def _choice(parameter: str, value: str, allowed: Sequence[str]) -> Any:
    if value not in allowed:
        raise InvalidSpecError(parameter, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _retryable_overrides(value: Mapping[str, bool] | None) -> dict[OutcomeKind, bool]:
    overrides: dict[OutcomeKind, bool] = {}
    for kind, retryable in (value or {}).items():
        if kind not in RETRYABLE or kind == "success":
            known = ", ".join(k for k in RETRYABLE if k != "success")
            raise InvalidSpecError(
                "retryable_failures", f"unknown failure kind {kind!r}; known: {known}"
            )
        if not isinstance(retryable, bool):
            raise InvalidSpecError(f"retryable_failures[{kind!r}]", "expected true or false")
        overrides[kind] = retryable
    return overrides
