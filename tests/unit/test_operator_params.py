"""DbtJobOperator refuses bad parameters when the DAG is parsed, before any cluster is touched."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import AssetAlias
from kubernetes.client import V1ResourceRequirements, V1Toleration

from kubedbt import DbtRunSpec, InvalidSpecError, RunIdentity, render_job
from kubedbt.airflow import DbtJobOperator
from kubedbt.airflow.links import LINKS
from kubedbt.core.progress import RunProgress

BASE: dict[str, Any] = {"task_id": "dbt", "command": "build", "image": "kubedbt/dbt:dev"}


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        ({"command": "deps"}, "command"),
        (
            {"container_resources": {"limits": {"memory": "lots"}}},
            "container_resources.limits.memory",
        ),
        ({"namespace": "Not_Valid"}, "namespace"),
        ({"startup_timeout": 0}, "startup_timeout"),
        ({"retry_strategy": "some"}, "retry_strategy"),
        ({"on_finish_action": "delete_pod"}, "on_finish_action"),
        ({"retryable_failures": {"test_failed": True}}, "retryable_failures"),
        ({"on_warning": "warn"}, "on_warning"),
        ({"on_warning": None}, "on_warning"),
        ({"pod_template_file": "/a.yaml", "pod_template_dict": {}}, "pod_template_file"),
        ({"artifacts_url": "http://minio:9000/bucket"}, "artifacts_url"),
        ({"artifacts_secret": "Not_A_Secret"}, "artifacts_secret"),
        ({"warehouse_uri": "postgres://dbt:hunter2@warehouse:5432"}, "warehouse_uri"),
        ({"warehouse_uri": "oracle://warehouse"}, "warehouse_uri"),
        ({"docs_url": "docs.example.com"}, "docs_url"),
        ({"job_url_template": "https://k8s.example.com/{pod}"}, "job_url_template"),
        ({"artifacts_link_template": "https://minio/{bucket"}, "artifacts_link_template"),
    ],
)
def test_bad_parameters_fail_at_parse_time(overrides: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        DbtJobOperator(**{**BASE, **overrides})
    assert caught.value.parameter == parameter


def test_templated_values_are_checked_after_rendering_only() -> None:
    operator = DbtJobOperator(
        **BASE,
        vars="{{ dag_run.conf['vars'] }}",
        full_refresh="{{ params.full_refresh }}",
        threads="{{ params.threads }}",
    )
    assert operator.vars == "{{ dag_run.conf['vars'] }}"


def test_kubernetes_models_are_accepted_like_kpo() -> None:
    operator = DbtJobOperator(
        **BASE,
        container_resources=V1ResourceRequirements(limits={"memory": "1Gi"}),
        tolerations=[V1Toleration(key="batch", operator="Exists")],
    )
    spec = operator._spec()
    assert spec.container_resources == {"limits": {"memory": "1Gi"}}
    assert spec.tolerations == ({"key": "batch", "operator": "Exists"},)


def test_unknown_argument_is_refused() -> None:
    with pytest.raises(TypeError, match="selct"):
        DbtJobOperator(**BASE, selct="tag:daily")


def test_env_values_rendered_as_numbers_become_strings_again() -> None:
    # render_template_as_native_obj turns "5432" into 5432 and "true" into True.
    operator = DbtJobOperator(**BASE, env_vars={"PORT": "5432"})
    operator.env_vars = {"PORT": 5432, "SSL": True, "RATIO": 0.5}
    env = {e["name"]: e["value"] for e in operator._spec().env_vars}
    assert env == {"PORT": "5432", "SSL": "true", "RATIO": "0.5"}


def test_image_may_come_from_the_namespace_defaults() -> None:
    operator = DbtJobOperator(task_id="dbt", command="build")
    assert operator._spec_values()["image"] is None
    assert operator.spec_parameters == ["command"]


def test_the_watch_limits_on_the_job_are_those_describe_judges_by() -> None:
    operator = DbtJobOperator(
        **BASE, startup_timeout=45, results_timeout=20, execution_timeout=timedelta(hours=1)
    )
    spec = DbtRunSpec(command="build", image="kubedbt/dbt:dev", termination_grace_period=50)
    job = render_job(
        spec, RunIdentity("d", "t", "r"), annotations=operator._limit_annotations(spec)
    )
    progress = RunProgress.for_job(job)
    watched = operator._trigger_args(spec, RunIdentity("d", "t", "r"), "j")
    assert (progress.startup_timeout, progress.results_timeout) == (45.0, 20.0)
    # dbt is stopped the grace period and a margin before Airflow's timeout, to report in time.
    assert progress.execution_timeout == watched.limits.execution_timeout == 3600.0 - 50 - 10


def test_secrets_in_a_warehouse_uri_are_never_echoed() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        DbtJobOperator(**BASE, warehouse_uri="postgres://dbt:hunter2@warehouse:5432")
    assert "hunter2" not in str(caught.value)


def test_links_point_at_the_run() -> None:
    operator = DbtJobOperator(
        **BASE,
        docs_url="https://docs.example.com/",
        job_url_template="https://k8s.example.com/#/job/{namespace}/{job_name}",
        artifacts_link_template="https://minio.example.com/browser/{bucket}/{prefix}",
    )
    job, artifacts, docs = (link.get_link(operator, ti_key=None) for link in LINKS)
    assert (job, artifacts) == ("", "")  # nothing ran yet: the UI shows them disabled
    assert docs == "https://docs.example.com/"
    operator.run_links.job = ("dbt-daily-build-3f2a9c1b0e-t1", "analytics")
    operator.run_links.artifacts_url = "s3://dbt/prod/daily/build/manual__2026+00:00/try-1/"
    job, artifacts, _ = (link.get_link(operator, ti_key=None) for link in LINKS)
    assert job == "https://k8s.example.com/#/job/analytics/dbt-daily-build-3f2a9c1b0e-t1"
    assert artifacts == (
        "https://minio.example.com/browser/dbt/prod/daily/build/manual__2026%2B00%3A00/try-1/"
    )
    # Without a template, S3 folders link to the AWS console.
    plain = DbtJobOperator(**{**BASE, "task_id": "plain"})
    plain.run_links.artifacts_url = "s3://dbt/prod/"
    assert LINKS[1].get_link(plain, ti_key=None) == (
        "https://s3.console.aws.amazon.com/s3/buckets/dbt?prefix=prod%2F"
    )


def test_the_asset_alias_is_an_outlet() -> None:
    operator = DbtJobOperator(**BASE, warehouse_uri="postgres://warehouse:5432")
    assert AssetAlias("kubedbt/dbt") in operator.outlets
    named = DbtJobOperator(**{**BASE, "task_id": "named"}, asset_alias="marts")
    assert AssetAlias("marts") in named.outlets


@pytest.mark.parametrize("policy", ["ignore", "log", "fail"])
def test_on_warning_takes_its_three_policies(policy: str) -> None:
    assert DbtJobOperator(**BASE, on_warning=policy).on_warning == policy
    assert DbtJobOperator(**BASE).on_warning == "log"


def test_a_warnings_failure_can_be_made_retryable() -> None:
    operator = DbtJobOperator(**BASE, retryable_failures={"warnings": True})
    assert operator.retryable_failures == {"warnings": True}


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        ({"profile_conn_id": ""}, "profile_conn_id"),
        ({"profile_conn_id": "warehouse", "profile_target": 3}, "profile_target"),
        ({"profile_conn_id": "warehouse", "profile_args": {"type": "duckdb"}}, "profile_args"),
        ({"profile_conn_id": "warehouse", "profile_args": {"at": timedelta(1)}}, "profile_args.at"),
        ({"profile_conn_id": "warehouse", "target": "prod"}, "target"),
        ({"profile_conn_id": "warehouse", "profile": "jaffle_shop"}, "profile"),
        ({"profile_conn_id": "warehouse", "profiles_dir": "/usr/app"}, "profiles_dir"),
    ],
)
def test_bad_profile_parameters_fail_at_parse_time(
    overrides: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        DbtJobOperator(**{**BASE, **overrides})
    assert caught.value.parameter == parameter


def test_profile_conn_id_and_target_are_templated_and_kept_out_of_the_spec() -> None:
    operator = DbtJobOperator(
        **BASE,
        profile_conn_id="{{ params.conn }}",
        profile_target="{{ params.target }}",
        profile_args={"schema": "marts", "threads": 4},
    )
    assert {"profile_conn_id", "profile_target"} <= set(operator.template_fields)
    assert "profile_args" not in operator.template_fields
    assert "profile_conn_id" not in operator._spec_values()


PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END PRIVATE KEY-----"


def test_the_connection_is_read_rendered_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    from kubedbt.airflow import params

    extra = {"account": "acct", "warehouse": "TRANSFORMING_WH", "database": "ANALYTICS_DB"}
    connection = {
        "conn_type": "snowflake",
        "login": "DBT",
        "password": "passphrase-9f3c",
        "schema": "MARTS",
        "extra": {**extra, "private_key_content": PRIVATE_KEY},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SNOW", json.dumps(connection))
    operator = DbtJobOperator(**BASE, profile_conn_id="snow", profile_args={"threads": 4})
    profile = params.read_profile(operator)
    assert profile is not None
    assert profile.target == "snow"
    shown = str(redact(f"{profile.text} passphrase-9f3c {PRIVATE_KEY}"))
    assert "passphrase-9f3c" not in shown
    assert "MIIEvQIBADANBgkqhkiG9w0B" not in shown
    # Ordinary extras stay readable in the task log: only keys Airflow deems sensitive are hidden.
    assert str(redact("on TRANSFORMING_WH in ANALYTICS_DB")) == "on TRANSFORMING_WH in ANALYTICS_DB"


# Not the key above: Airflow's masker is process-wide, and this one must be masked by kubedbt alone.
KEYFILE_KEY = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEF\n-----END PRIVATE KEY-----\n"
)


def test_a_private_key_inside_keyfile_json_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow hides the keyfile_dict string (JSON, its newlines escaped); the key, unescaped as
    dbt's keyfile_json and any log of it would show it, only kubedbt knows to hide."""
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    from kubedbt.airflow import params

    keyfile = {"type": "service_account", "private_key": KEYFILE_KEY, "client_email": "d@p.iam"}
    extra = {"project": "analytics-prod-4711", "keyfile_dict": json.dumps(keyfile)}
    connection = {"conn_type": "google_cloud_platform", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_GCP", json.dumps(connection))
    operator = DbtJobOperator(**BASE, profile_conn_id="gcp", profile_args={"dataset": "marts"})
    assert params.read_profile(operator) is not None
    shown = str(redact(f"key: {KEYFILE_KEY}"))
    assert "MIIEvgIBADANBgkqhkiG9w0BAQEF" not in shown
    assert str(redact("project analytics-prod-4711")) == "project analytics-prod-4711"


@pytest.mark.parametrize(
    ("connection", "problem"),
    [
        ({"conn_type": "mysql", "host": "h", "password": "hunter2-x"}, "type 'mysql' has no"),
        ({"conn_type": "postgres", "login": "u", "password": "hunter2-x"}, "has no host"),
        (None, "Airflow has no connection 'wh'"),
    ],
)
def test_a_connection_kubedbt_cannot_use_names_the_parameter(
    monkeypatch: pytest.MonkeyPatch, connection: dict[str, str] | None, problem: str
) -> None:
    from kubedbt.airflow import params

    if connection is not None:
        monkeypatch.setenv("AIRFLOW_CONN_WH", json.dumps(connection))
    operator = DbtJobOperator(**BASE, profile_conn_id="wh")
    with pytest.raises(InvalidSpecError) as caught:
        params.read_profile(operator)
    assert caught.value.parameter == "profile_conn_id"
    assert problem in str(caught.value)
    assert "hunter2-x" not in str(caught.value)
