"""Representative specs whose rendered manifests are kept as golden YAML files.

Shared by the golden-file tests and the cluster's server-side dry run, so that every golden
manifest is also known to be accepted by a real API server.
"""

from __future__ import annotations

from pathlib import Path

from kubedbt import DbtRunSpec, RunIdentity

GOLDEN_DIR = Path(__file__).parent / "golden"

IDENTITY = RunIdentity(
    dag_id="daily_marts",
    task_id="dbt_build",
    run_id="scheduled__2026-11-01T00:00:00+00:00",
)

CASES: dict[str, tuple[DbtRunSpec, RunIdentity]] = {
    "minimal": (DbtRunSpec(command="build", image="kubedbt/dbt:dev"), IDENTITY),
    "full": (
        DbtRunSpec(
            command="build",
            select=["tag:daily", "marts"],
            exclude="tag:slow",
            vars={"start_date": "2026-11-01", "limit": 10, "flags": {"strict": True}},
            full_refresh=True,
            fail_fast=True,
            threads=8,
            target="prod",
            profile="jaffle_shop",
            project_dir="/usr/app/dbt",
            profiles_dir="/usr/app/profiles",
            dbt_flags=["--warn-error"],
            image="registry.example.com/analytics/dbt:1.4.2",
            image_pull_policy="Always",
            image_pull_secrets="regcred, backup-regcred",
            namespace="analytics",
            service_account_name="dbt-runner",
            container_resources={
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"cpu": 2, "memory": "2Gi"},
            },
            env_vars={"DBT_ENV": "prod", "DBT_USE_COLORS": "true"},
            env_from=[{"secretRef": {"name": "warehouse-credentials"}}],
            volumes=[{"name": "seeds", "configMap": {"name": "extra-seeds"}}],
            volume_mounts=[
                {"name": "seeds", "mountPath": "/usr/app/dbt/seeds/extra", "readOnly": True}
            ],
            node_selector={"workload": "batch"},
            tolerations=[{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a"]}
                                ]
                            }
                        ]
                    }
                }
            },
            priority_class_name="batch-low",
            labels={"team": "analytics"},
            annotations={"owner": "data-platform@example.com"},
            security_context={"runAsUser": 1001, "runAsGroup": 1001, "fsGroup": 1001},
            container_security_context={"readOnlyRootFilesystem": True},
            sidecar_image="registry.example.com/kubedbt/sidecar:0.1.0",
            artifacts_url="s3://dbt-artifacts/prod",
            artifacts_secret="artifacts-credentials",
            active_deadline_seconds=3600,
            backoff_limit=2,
            ttl_seconds_after_finished=3600,
            termination_grace_period=90,
        ),
        RunIdentity(
            dag_id="marts.daily-refresh",
            task_id="transform.dbt_build",
            run_id="manual__2026-11-21T08:15:00.123456+00:00",
            map_index=3,
            try_number=2,
        ),
    ),
    "pod_template": (
        DbtRunSpec(
            command="run",
            select="staging",
            image="kubedbt/dbt:dev",
            env_vars={"DBT_ENV": "dev"},
            pod_template={
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "ignored", "labels": {"cost-center": "42"}},
                "spec": {
                    "containers": [
                        {
                            "name": "dbt",
                            "image": "overridden:by-kubedbt",
                            "resources": {"limits": {"memory": "3Gi"}},
                            "env": [{"name": "FROM_TEMPLATE", "value": "yes"}],
                        }
                    ],
                    "tolerations": [{"key": "spot", "operator": "Exists"}],
                    "dnsPolicy": "ClusterFirst",
                },
            },
            tolerations=[{"key": "batch", "operator": "Exists"}],
        ),
        IDENTITY,
    ),
    "run_operation": (
        DbtRunSpec(
            command="run-operation",
            macro="grant_select",
            macro_args={"role": "reporter"},
            image="kubedbt/dbt:dev",
        ),
        IDENTITY,
    ),
    "source_freshness": (
        DbtRunSpec(
            command="source freshness", select="source:jaffle_shop", image="kubedbt/dbt:dev"
        ),
        IDENTITY,
    ),
    "docs_generate": (
        DbtRunSpec(command="docs generate", image="kubedbt/dbt:dev", threads=8),
        IDENTITY,
    ),
    # No --target-path; --connection.
    "debug": (DbtRunSpec(command="debug", target="prod", image="kubedbt/dbt:dev"), IDENTITY),
    "clone": (
        DbtRunSpec(
            command="clone",
            state="/usr/app/prod-state",
            select="marts",
            image="kubedbt/dbt:dev",
            volumes=[{"name": "prod-state", "configMap": {"name": "prod-manifest"}}],
            volume_mounts=[
                {"name": "prod-state", "mountPath": "/usr/app/prod-state", "readOnly": True}
            ],
        ),
        IDENTITY,
    ),
    # The inline query, Jinja and quotes included, is one argument; --output json.
    "show": (
        DbtRunSpec(
            command="show",
            inline="select * from {{ ref('orders') }} where status = 'returned'",
            dbt_flags=["--limit", "20"],
            image="kubedbt/dbt:dev",
        ),
        IDENTITY,
    ),
}
