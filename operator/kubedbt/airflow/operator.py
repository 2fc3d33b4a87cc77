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
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal, get_args

from airflow.sdk import AssetAlias, BaseOperator, Context, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from kubedbt.airflow import lineage, links, metrics, params
from kubedbt.airflow.events import RunEvent, apply_warning_policy, run_event
from kubedbt.airflow.links import ARTIFACTS_FIELDS, JOB_FIELDS, LINKS, RunLinks, url_template
from kubedbt.airflow.trigger import ConnectionArgs, DbtJobTrigger, TriggerArgs
from kubedbt.core import naming, results
from kubedbt.core.artifacts import run_url
from kubedbt.core.classify import RETRYABLE
from kubedbt.core.defaults import CONFIGMAP_NAME, apply_defaults, parse_defaults
from kubedbt.core.errors import InvalidSpecError, KubedbtError
from kubedbt.core.metrics import MetricTags
from kubedbt.core.naming import RunIdentity
from kubedbt.core.profiles import Profile
from kubedbt.core.report import summary_lines
from kubedbt.core.spec import DbtRunSpec, field_names
from kubedbt.core.warehouse import check_warehouse_uri
from kubedbt.io.api_errors import KubeApiError
from kubedbt.io.kube import RunClient
from kubedbt.io.launch import Launched, launch_run
from kubedbt.io.retry import RetryPolicy
from kubedbt.io.watch import RunRef, WatchLimits, watch_run

RetryStrategy = Literal["failed_nodes", "full"]
OnFinishAction = Literal["delete_job", "delete_succeeded_job", "keep_job"]
OnWarning = Literal["ignore", "log", "fail"]
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
    :param on_warning: what nodes that warned (tests with severity warn, sources past
        warn_after) do to a run that succeeded: "log" (default) lists them in the task log,
        "ignore" does not, "fail" fails the task (kind "warnings", not retried by default).
    :param log_tail_lines: lines of dbt's log shown in the task log when a run fails.
    :param defaults_configmap: the namespace's ConfigMap of defaults (the helm chart's
        `kubedbt-defaults`) for parameters the DAG leaves unset; None to ignore it.
    :param warehouse_uri: the warehouse as lineage names it (postgres://host:5432,
        duckdb:///path/file.duckdb): the namespace of OpenLineage datasets and the base of the
        Airflow asset URIs emitted for each model, seed and snapshot built. No credentials.
    :param asset_alias: the AssetAlias (declared among the outlets) the asset events go
        through; default kubedbt/<dag_id>/<task_id>.
    :param docs_url: the project's dbt docs site, for the task's "dbt docs" link.
    :param job_url_template: the "Kubernetes Job" link, with {namespace} and {job_name};
        default [kubedbt] job_url_template in Airflow's configuration.
    :param artifacts_link_template: the "dbt artifacts" link, with {url}, {bucket} and
        {prefix}; default [kubedbt] artifacts_link_template, else the S3 or GCS console.
    :param profile_conn_id: an Airflow connection (postgres, redshift, snowflake,
        google_cloud_platform, databricks, trino, duckdb) rendered into the try's profiles.yml:
        a Secret owned by the Job that only the dbt container mounts. dbt then runs with
        --profile kubedbt --target <profile_target>; target, profile and profiles_dir are
        refused beside it.
    :param profile_target: the name of the profile's one target (dbt's target.name); default
        the connection id.
    :param profile_args: plain data laid over the rendered target (schema, threads, dataset,
        any adapter option the connection does not carry). Visible in the UI: no secrets.
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
        "profile_conn_id",
        "profile_target",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"vars": "json", "macro_args": "json"}
    ui_color = "#ff694a"
    operator_extra_links = LINKS

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
        on_warning: OnWarning = "log",
        log_tail_lines: int = 50,
        pod_template_file: str | None = None,
        pod_template_dict: Mapping[str, Any] | None = None,
        defaults_configmap: str | None = CONFIGMAP_NAME,
        warehouse_uri: str | None = None,
        asset_alias: str | None = None,
        docs_url: str | None = None,
        job_url_template: str | None = conf.get("kubedbt", "job_url_template", fallback=None),
        artifacts_link_template: str | None = conf.get(
            "kubedbt", "artifacts_link_template", fallback=None
        ),
        profile_conn_id: str | None = None,
        profile_target: str | None = None,
        profile_args: Mapping[str, Any] | None = None,
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
        self.profile_conn_id = profile_conn_id
        self.profile_target = profile_target
        self.profile_args = dict(profile_args) if profile_args is not None else None
        for name in self.template_fields:
            if not hasattr(self, name):
                setattr(self, name, params.default(name))
        self.connection = ConnectionArgs(
            kubernetes_conn_id, cluster_context, config_file, in_cluster
        )
        self.deferrable = deferrable
        self.startup_timeout = params.positive("startup_timeout", startup_timeout)
        self.results_timeout = params.positive("results_timeout", results_timeout)
        self.retry_strategy = params.choice(
            "retry_strategy", retry_strategy, get_args(RetryStrategy)
        )
        self.on_finish_action = params.choice(
            "on_finish_action", on_finish_action, get_args(OnFinishAction)
        )
        self.push_run_results = push_run_results
        self.retryable_failures = params.retryable_overrides(retryable_failures)
        self.on_warning = params.choice("on_warning", on_warning, get_args(OnWarning))
        self.log_tail_lines = log_tail_lines
        self.defaults_configmap = defaults_configmap
        self.api_retry_policy = RetryPolicy()
        self.warehouse_uri = check_warehouse_uri("warehouse_uri", warehouse_uri)
        self.run_links = RunLinks(
            job_template=url_template("job_url_template", job_url_template, JOB_FIELDS),
            artifacts_template=url_template(
                "artifacts_link_template", artifacts_link_template, ARTIFACTS_FIELDS
            ),
            docs_url=links.http_url("docs_url", docs_url),
        )
        # Declared even without warehouse_uri: BigQuery's relations are named without one.
        owner = f"{self.dag_id}/{self.task_id}" if self.has_dag() else self.task_id  # type: ignore[no-untyped-call]
        self.asset_alias = asset_alias or f"kubedbt/{owner}"
        self.outlets = [*self.outlets, AssetAlias(self.asset_alias)]
        self._running: tuple[str, str] | None = None
        self._finished: results.RunResults | None = None
        # Validate now what templating cannot change, so a bad DAG fails at parse time.
        early = self._spec(early=True)
        if profile_conn_id is not None:
            params.check_profile(self, early)

    # --- building the run ---

    def _spec_values(self, *, early: bool = False) -> dict[str, Any]:
        """The spec parameters as the DAG gave them (rendered, unless `early`)."""
        values: dict[str, Any] = {}
        for name in [*self.spec_parameters, *self.template_fields]:
            if name not in SPEC_PARAMETERS:
                continue  # the operator's own templated parameters (profile_conn_id, ...)
            value = params.plain(getattr(self, name, params.default(name)))
            if early and name in self.template_fields and params.templated(value):
                value = params.default(name)
            if name == "env_vars" and isinstance(value, Mapping):
                value = {key: params.env_value(item) for key, item in value.items()}
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
        # The connection is read before anything is created; its secrets are masked at once.
        try:
            profile = params.read_profile(self)
        except KubedbtError as e:  # no such connection, or one kubedbt cannot map
            raise AirflowFailException(str(e)) from None
        launched, spec = self._run_async(self._launch(self._spec_values(), identity, profile))
        self._running = (launched.run.job_name, launched.run.namespace)
        self.run_links.job = self._running
        if spec.artifacts_url is not None:
            self.run_links.artifacts_url = run_url(spec.artifacts_url, launched.identity)
        self._announce(context, launched)
        metrics.record_launch(
            self._metric_tags(context, spec.namespace, spec.command),
            try_number=identity.try_number,
            resumed=launched.state_from is not None,
            adopted=launched.run.adopted or launched.adopted_try is not None,
            log=self.log,
        )
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
        self, values: dict[str, Any], identity: RunIdentity, profile: Profile | None = None
    ) -> tuple[Launched, DbtRunSpec]:
        """Apply the namespace's defaults, validate, and create (or adopt) this try's run."""
        async with self.connection.async_hook().get_conn() as api_client:
            client = RunClient(api_client, self.api_retry_policy)
            if self.defaults_configmap is not None and isinstance(values.get("namespace"), str):
                found = await client.read_configmap(self.defaults_configmap, values["namespace"])
                values = apply_defaults(values, parse_defaults(found), self.spec_parameters)
            spec = DbtRunSpec.from_mapping(values)  # InvalidSpecError: nothing created yet
            params.mask_sensitive_env(spec)
            resume = self.retry_strategy == "failed_nodes" and spec.command in RESUMABLE_COMMANDS
            launched = await launch_run(
                client,
                spec,
                identity,
                resume=resume,
                log=self.log,
                annotations=self._limit_annotations(spec),
                profile=profile,
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
        return run_event(args.run.job_name, args.run.namespace, result)

    # --- finishing ---

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Report the run, clean up per on_finish_action, and succeed or raise."""
        # A run that succeeded with warned nodes fails here when on_warning says so.
        run = apply_warning_policy(event, self.on_warning)  # type: ignore[arg-type]
        self._running = None
        self.run_links.job = (run["job_name"], run["namespace"])
        summary = run["summary"]
        if summary is not None and summary.get("artifacts"):
            self.run_links.artifacts_url = summary["artifacts"]["url"]  # type: ignore[index]
        if summary is not None:
            for line in summary_lines(summary, warnings=self.on_warning != "ignore"):
                self.log.info("%s", line)
        if run["status"] != "success" and run["log_tail"]:
            self.log.info("last lines of dbt's log:\n%s", run["log_tail"])
        results_bytes = None
        try:
            self._finished, results_bytes = self._run_async(self._finish(run))
        finally:  # the outcome is counted even when reading the results or deleting the Job fails
            metrics.record_run(
                run,
                self._metric_tags(context, run["namespace"], getattr(self, "command", None)),
                retryable=self._retryable(run),
                results_bytes=results_bytes,
                log=self.log,
            )
        ti = context["ti"]
        if self.push_run_results and self._finished is not None:
            ti.xcom_push(key="run_results", value=self._finished.run_results)
        if run["status"] == "success":
            self.log.info("dbt succeeded (Job %s/%s)", run["namespace"], run["job_name"])
            self._emit_assets(context)
            return summary
        ti.xcom_push(key="summary", value=summary)
        # An older triggerer's event has no fix.
        fix = run.get("fix")
        outcome = {
            "kind": run["kind"],
            "retryable": self._retryable(run),
            "reason": run["reason"],
            "fix": fix,
        }
        ti.xcom_push(key="outcome", value=outcome)
        for line in run["evidence"]:
            self.log.info("evidence: %s", line)
        message = f"dbt run {run['namespace']}/{run['job_name']} failed: {run['reason']}"
        if fix:
            self.log.error("Fix: %s", fix)
            message += f"\nFix: {fix}"
        if self._retryable(run):
            raise AirflowException(message)
        raise AirflowFailException(message)

    def _metric_tags(self, context: Context, namespace: str, command: Any) -> MetricTags:
        ti = context["ti"]
        return MetricTags(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            namespace=namespace,
            command=command if isinstance(command, str) else None,
        )

    def _retryable(self, run: RunEvent) -> bool:
        kind = run["kind"]
        if kind is None:
            return run["retryable"]
        return self.retryable_failures.get(kind, RETRYABLE[kind])

    async def _finish(self, run: RunEvent) -> tuple[results.RunResults | None, int | None]:
        """Read the whole results ConfigMap, then delete the Job if that is the policy.

        The trigger's event carries the summary only; run_results (push_run_results) and the
        lineage digest (OpenLineage, asset events) are read here, once, before the Job and its
        ConfigMap may go. Returns them with the size of the ConfigMap's payload, for the metrics.
        """
        succeeded = run["status"] == "success"
        delete = run["kind"] != "job_deleted" and (
            self.on_finish_action == "delete_job"
            or (self.on_finish_action == "delete_succeeded_job" and succeeded)
            or run["kind"] in ABANDONED
        )
        finished = None
        size = None
        async with self.connection.async_hook().get_conn() as api_client:
            client = RunClient(api_client, self.api_retry_policy)
            name = run["job_name"] + naming.RESULTS_SUFFIX
            try:
                configmap = await client.read_configmap(name, run["namespace"])
            except KubeApiError as e:
                if self.push_run_results:
                    raise
                # Lineage and asset events are not worth a rerun of dbt, nor a changed verdict.
                self.log.warning("no lineage for this run: could not read %s: %s", name, e)
                configmap = None
            if configmap is not None:
                finished = results.decode(configmap, artifacts=self.push_run_results)
                size = results.stored_size(configmap)
            if delete:
                await client.delete_job(run["job_name"], run["namespace"])
                self.log.info("deleted Job %s/%s", run["namespace"], run["job_name"])
        return finished, size

    def _emit_assets(self, context: Context) -> None:
        """An asset event for each model, seed and snapshot the run built."""
        digest = self._finished.lineage if self._finished is not None else None
        try:
            emitted = lineage.emit_run_assets(context, digest, self.warehouse_uri, self.asset_alias)
        except ValueError as e:  # a URI Airflow refuses: the run itself succeeded
            emitted = f"no asset events: {e}"
        self.log.info("%s", emitted)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The run's inputs and outputs for the OpenLineage provider, from the lineage digest."""
        return self._openlineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """What a failed run read and what it did build, for the OpenLineage provider."""
        return self._openlineage()

    def _openlineage(self) -> Any:
        if self._finished is None or self.run_links.job is None:
            return None
        job_name, namespace = self.run_links.job
        return lineage.operator_lineage(
            self._finished.lineage, self.warehouse_uri, job_name=job_name, namespace=namespace
        )

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
