"""Profiles rendered from Airflow connections: each type's mapping, its errors, and dbt's verdict.

The postgres and duckdb profiles are loaded with dbt's own profile loader and the adapters'
Credentials classes (.venv-dbt has dbt-core, dbt-postgres and dbt-duckdb). The other adapters are
checked against the keys their documentation requires.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubedbt import DbtRunSpec, RunIdentity
from kubedbt.core.command import PROFILE_DIR, dbt_args, list_args
from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.naming import DBT_CONTAINER, profile_secret_name
from kubedbt.core.profiles import (
    MAPPERS,
    ConnectionFields,
    Profile,
    profile_spec,
    render_profile,
    render_profile_secret,
    with_target,
)
from kubedbt.core.render import owned_by_job, render_job, retry_spec
from kubedbt.io.api_errors import from_response, submitted_secrets

DBT_PYTHON = Path(os.environ.get("KUBEDBT_DBT", ".venv-dbt/bin/dbt")).parent / "python"
PASSWORD = "s3cr3t-Pa55word"
PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
)
TOKEN = "dapi0123456789abcdef"
KEYFILE = {
    "type": "service_account",
    "project_id": "acme",
    "private_key_id": "0a1b2c3d4e5f",
    "private_key": PRIVATE_KEY,
    "client_email": "dbt@acme.iam.gserviceaccount.com",
}
IDENTITY = RunIdentity(dag_id="daily", task_id="dbt_build", run_id="manual__1")


def conn(conn_type: str, **values: Any) -> ConnectionFields:
    return ConnectionFields(conn_id="warehouse", conn_type=conn_type, **values)


CONNECTIONS: dict[str, ConnectionFields] = {
    "postgres": conn(
        "postgres",
        host="pg.example",
        port=5433,
        login="dbt",
        password=PASSWORD,
        schema="analytics",
        extra={"sslmode": "require"},
    ),
    "redshift": conn("redshift", host="rs.example", login="dbt", password=PASSWORD, schema="dev"),
    "snowflake": conn(
        "snowflake",
        login="DBT",
        password=PASSWORD,
        schema="MARTS",
        extra={"account": "xy12345", "region": "eu-west-1", "warehouse": "WH", "database": "DB"},
    ),
    "google_cloud_platform": conn(
        "google_cloud_platform", extra={"project": "acme", "keyfile_dict": json.dumps(KEYFILE)}
    ),
    "databricks": conn(
        "databricks",
        host="https://adb-1.azuredatabricks.net/",
        password=TOKEN,
        extra={"http_path": "/sql/1.0/warehouses/abc", "catalog": "main"},
    ),
    "trino": conn(
        "trino",
        host="trino.example",
        port=443,
        login="dbt",
        password=PASSWORD,
        schema="marts",
        extra={"catalog": "iceberg", "protocol": "https"},
    ),
    "duckdb": conn("duckdb", host="/data/warehouse.duckdb"),
}
ARGS: dict[str, dict[str, Any]] = {"google_cloud_platform": {"dataset": "marts"}}
# What each adapter's documentation requires of a profile output.
REQUIRED: dict[str, set[str]] = {
    "postgres": {"type", "host", "port", "user", "password", "dbname", "schema"},
    "redshift": {"type", "method", "host", "port", "user", "password", "dbname", "schema"},
    "snowflake": {"type", "account", "user", "password", "database", "warehouse", "schema"},
    "google_cloud_platform": {"type", "method", "project", "dataset", "keyfile_json"},
    "databricks": {"type", "host", "http_path", "token", "schema"},
    "trino": {"type", "method", "host", "port", "user", "database", "schema"},
    "duckdb": {"type", "path"},
}


def output_of(profile: Profile) -> dict[str, Any]:
    document = yaml.safe_load(profile.text)
    assert document["kubedbt"]["target"] == profile.target
    output: dict[str, Any] = document["kubedbt"]["outputs"][profile.target]
    return output


def test_every_mapped_type_is_tested() -> None:
    assert set(CONNECTIONS) | {"gcpbigquery"} == set(MAPPERS)


@pytest.mark.parametrize("conn_type", sorted(CONNECTIONS))
def test_each_type_renders_what_its_adapter_requires(conn_type: str) -> None:
    profile = render_profile(CONNECTIONS[conn_type], target="prod", args=ARGS.get(conn_type))
    output = output_of(profile)
    assert REQUIRED[conn_type] <= set(output), REQUIRED[conn_type] - set(output)
    assert profile.conn_type == conn_type


@pytest.mark.parametrize("conn_type", sorted(CONNECTIONS))
def test_repr_and_str_never_show_the_text(conn_type: str) -> None:
    profile = render_profile(CONNECTIONS[conn_type], target="prod", args=ARGS.get(conn_type))
    for shown in (repr(profile), str(profile), repr(CONNECTIONS[conn_type])):
        assert PASSWORD not in shown
        assert TOKEN not in shown
        assert "PRIVATE KEY" not in shown
        assert "profiles" not in shown
        assert "outputs" not in shown


def test_postgres_maps_airflow_fields_the_way_the_hook_reads_them() -> None:
    output = output_of(render_profile(CONNECTIONS["postgres"], target="prod"))
    assert output == {
        "type": "postgres",
        "host": "pg.example",
        "port": 5433,
        "user": "dbt",
        "password": PASSWORD,
        "dbname": "analytics",  # Airflow's "schema" field is the database
        "schema": "public",
        "sslmode": "require",
    }


def test_profile_args_are_laid_over_the_output() -> None:
    args = {"schema": "marts", "threads": 8, "keepalives_idle": 30}
    output = output_of(render_profile(CONNECTIONS["postgres"], target="prod", args=args))
    assert (output["schema"], output["threads"], output["keepalives_idle"]) == ("marts", 8, 30)


@pytest.mark.parametrize(
    ("args", "parameter"),
    [
        ({"type": "duckdb"}, "profile_args"),
        ({"threads": float("nan")}, "profile_args.threads"),
        ({"when": object()}, "profile_args.when"),
        ("threads: 4", "profile_args"),
        ({"schema": 3}, "profile_args.schema"),
    ],
)
def test_bad_profile_args_name_the_parameter(args: Any, parameter: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        render_profile(CONNECTIONS["postgres"], target="prod", args=args)
    assert caught.value.parameter == parameter


def test_an_unmapped_type_names_the_parameter_and_the_supported_ones() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        render_profile(conn("mysql", host="h", password=PASSWORD), target="prod")
    assert caught.value.parameter == "profile_conn_id"
    message = str(caught.value)
    assert "connection type 'mysql' has no dbt profile" in message
    assert "supported: databricks, duckdb, gcpbigquery, google_cloud_platform, postgres" in message
    assert PASSWORD not in message


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        (conn("postgres", login="dbt", password=PASSWORD, schema="db"), "has no host"),
        (conn("postgres", host="h", password=PASSWORD, schema="db"), "has no login"),
        (conn("postgres", host="h", login="dbt", password=PASSWORD), "has no database"),
        (conn("snowflake", login="u", password=PASSWORD, schema="s"), "has no account"),
        (
            conn(
                "snowflake",
                login="u",
                schema="s",
                extra={"account": "a", "warehouse": "w", "database": "d"},
            ),
            "has no password or private key",
        ),
        (
            conn("snowflake", login="u", password=PASSWORD, schema="s", extra={"account": "a"}),
            "has no database: set its extra 'database'",
        ),
        (
            conn(
                "snowflake",
                login="u",
                password=PASSWORD,
                schema="s",
                extra={"account": "a", "database": "d"},
            ),
            "has no warehouse: set its extra 'warehouse'",
        ),
        (conn("databricks", host="h", password=TOKEN), "has no http_path"),
        (conn("databricks", host="h", extra={"http_path": "/p"}), "has no token"),
        (conn("trino", host="h", login="u", password=PASSWORD), "has no schema"),
        (conn("duckdb", password=PASSWORD), "has no path"),
        (conn("google_cloud_platform", extra={"keyfile_dict": "{}"}), "has no project"),
        (
            conn("google_cloud_platform", extra={"project": "p", "keyfile_dict": PRIVATE_KEY}),
            "is not a JSON object",
        ),
    ],
)
def test_missing_fields_name_the_parameter_and_the_field_never_a_value(
    fields: ConnectionFields, missing: str
) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        render_profile(fields, target="prod", args={"dataset": "d"})
    assert caught.value.parameter == "profile_conn_id"
    assert missing in str(caught.value)
    for secret in (PASSWORD, TOKEN, "MIIEvQIBADANBgkq"):
        assert secret not in str(caught.value)


def test_bigquery_needs_a_dataset_in_profile_args() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        render_profile(CONNECTIONS["google_cloud_platform"], target="prod")
    assert caught.value.parameter == "profile_args"


def test_snowflake_key_pair_uses_the_password_as_passphrase() -> None:
    fields = conn(
        "snowflake",
        login="DBT",
        password="passphrase",
        schema="S",
        extra={
            "extra__snowflake__account": "org-acct",
            "warehouse": "WH",
            "database": "DB",
            "private_key_content": PRIVATE_KEY,
        },
    )
    profile = render_profile(fields, target="prod")
    output = output_of(profile)
    assert output["account"] == "org-acct"
    assert output["private_key"] == PRIVATE_KEY
    assert output["private_key_passphrase"] == "passphrase"
    assert "password" not in output
    assert PRIVATE_KEY in profile.secrets
    assert "passphrase" in profile.secrets


@pytest.mark.parametrize(
    ("extra", "method"),
    [({"key_path": "/var/keys/sa.json"}, "service-account"), ({}, "oauth")],
)
def test_bigquery_without_keyfile_json(extra: dict[str, str], method: str) -> None:
    fields = conn("google_cloud_platform", extra={"project": "acme", **extra})
    output = output_of(render_profile(fields, target="prod", args={"dataset": "d"}))
    assert output["method"] == method


@pytest.mark.parametrize("conn_type", sorted(CONNECTIONS))
def test_secrets_list_what_must_be_masked(conn_type: str) -> None:
    profile = render_profile(CONNECTIONS[conn_type], target="prod", args=ARGS.get(conn_type))
    text_secrets = [s for s in (PASSWORD, TOKEN, PRIVATE_KEY) if s in profile.text]
    assert set(text_secrets) <= set(profile.secrets)
    if conn_type == "google_cloud_platform":
        # The key is in the text as YAML; masked whole and line by line would be overkill: the
        # masker gets the key itself.
        assert PRIVATE_KEY in profile.secrets


# --- dbt's own verdict on the rendered files ---

LOAD_WITH_DBT = """
import sys, yaml
from argparse import Namespace
from dbt.config.profile import Profile
from dbt.config.renderer import ProfileRenderer
from dbt.flags import set_from_args
set_from_args(Namespace(), None)
raw = yaml.safe_load(open(sys.argv[1]))
profile = Profile.from_raw_profiles(raw, "kubedbt", renderer=ProfileRenderer({}))
print(type(profile.credentials).__name__, profile.target_name, profile.threads)
"""


@pytest.mark.skipif(not DBT_PYTHON.exists(), reason="needs .venv-dbt (make dbt-venv)")
@pytest.mark.parametrize(
    ("conn_type", "credentials"),
    [("postgres", "PostgresCredentials"), ("duckdb", "DuckDBCredentials")],
)
def test_dbt_loads_the_rendered_profile(tmp_path: Path, conn_type: str, credentials: str) -> None:
    profile = render_profile(CONNECTIONS[conn_type], target="prod", args={"threads": 3})
    (tmp_path / "profiles.yml").write_text(profile.text)
    done = subprocess.run(
        [str(DBT_PYTHON), "-c", LOAD_WITH_DBT, str(tmp_path / "profiles.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [credentials, "prod", "3"]


@pytest.mark.skipif(not DBT_PYTHON.exists(), reason="needs .venv-dbt (make dbt-venv)")
def test_dbt_refuses_a_broken_profile(tmp_path: Path) -> None:
    # The check above can fail: dbt's loader does refuse an output missing what its adapter needs.
    output = output_of(render_profile(CONNECTIONS["postgres"], target="prod"))
    del output["dbname"]
    document = {"kubedbt": {"target": "prod", "outputs": {"prod": output}}}
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump(document))
    done = subprocess.run(
        [str(DBT_PYTHON), "-c", LOAD_WITH_DBT, str(tmp_path / "profiles.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0


# --- the run's side ---

SPEC = DbtRunSpec(command="build", image="kubedbt/dbt:dev", select=("tag:daily",))


def profile_job(spec: DbtRunSpec = SPEC) -> tuple[dict[str, Any], Profile]:
    profile = render_profile(CONNECTIONS["postgres"], target="prod")
    run_spec = profile_spec(spec, profile)
    job = render_job(run_spec, IDENTITY, profile_secret=profile_secret_name(IDENTITY))
    return dict(job), profile


def test_only_the_dbt_container_mounts_the_profile_read_only() -> None:
    job, _ = profile_job()
    pod = job["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "kubedbt-profile")
    assert volume["secret"] == {
        "secretName": profile_secret_name(IDENTITY),
        "items": [{"key": "profiles.yml", "path": "profiles.yml"}],
        "defaultMode": 0o440,
    }
    mounting = [
        c["name"]
        for c in pod["containers"] + pod["initContainers"]
        if any(m["name"] == "kubedbt-profile" for m in c.get("volumeMounts", []))
    ]
    assert mounting == [DBT_CONTAINER]
    dbt = pod["containers"][0]
    assert {"name": "kubedbt-profile", "mountPath": PROFILE_DIR, "readOnly": True} in dbt[
        "volumeMounts"
    ]


def test_dbt_is_pointed_at_the_profile_and_so_are_its_listing_and_retry() -> None:
    expected = ["--target", "prod", "--profile", "kubedbt", "--profiles-dir", PROFILE_DIR]
    profile = render_profile(CONNECTIONS["postgres"], target="prod")
    run_spec = profile_spec(SPEC, profile)
    for args in (dbt_args(run_spec), list_args(run_spec), dbt_args(retry_spec(run_spec))):
        assert args is not None
        at = args.index("--target")
        assert args[at : at + len(expected)] == expected


def test_the_job_holds_no_secret_value() -> None:
    job, profile = profile_job()
    text = json.dumps(job)
    assert PASSWORD not in text
    assert profile.text not in text


def test_without_a_profile_nothing_changes() -> None:
    job = render_job(SPEC, IDENTITY)
    assert "kubedbt-profile" not in json.dumps(job)


@pytest.mark.parametrize(
    ("values", "parameter"),
    [
        ({"profiles_dir": "/p"}, "profiles_dir"),
        ({"profile": "x"}, "profile"),
        ({"target": "t"}, "target"),
    ],
)
def test_a_rendered_profile_refuses_the_specs_own(values: dict[str, str], parameter: str) -> None:
    spec = DbtRunSpec.from_mapping({"command": "build", "image": "kubedbt/dbt:dev", **values})
    with pytest.raises(InvalidSpecError) as caught:
        profile_spec(spec, render_profile(CONNECTIONS["duckdb"], target="prod"))
    assert caught.value.parameter == parameter


def test_the_profile_mount_path_and_volume_are_reserved() -> None:
    with pytest.raises(InvalidSpecError, match="kubedbt-profile"):
        DbtRunSpec.from_mapping(
            {
                "command": "build",
                "image": "i",
                "volumes": [{"name": "kubedbt-profile", "emptyDir": {}}],
            }
        )
    with pytest.raises(InvalidSpecError, match="mountPath"):
        DbtRunSpec.from_mapping(
            {
                "command": "build",
                "image": "i",
                "volumes": [{"name": "x", "emptyDir": {}}],
                "volume_mounts": [{"name": "x", "mountPath": PROFILE_DIR}],
            }
        )


def test_the_secret_is_opaque_labelled_and_owned_by_the_job() -> None:
    profile = render_profile(CONNECTIONS["postgres"], target="prod")
    secret = owned_by_job(render_profile_secret(SPEC, IDENTITY, profile), "job", "uid-1")
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == profile_secret_name(IDENTITY)
    assert secret["metadata"]["name"].endswith("-profile")
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubedbt"
    assert secret["stringData"] == {"profiles.yml": profile.text}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    # Nothing may change it under a running pod.
    assert secret.get("immutable") is True


def test_api_errors_never_echo_the_secrets_data() -> None:
    fields = conn(
        "snowflake",
        login="DBT",
        password="passphrase-1",
        schema="S",
        extra={
            "account": "a",
            "warehouse": "WH",
            "database": "DB",
            "private_key_content": PRIVATE_KEY,
        },
    )
    profile = render_profile(fields, target="prod")
    secret = render_profile_secret(SPEC, IDENTITY, profile)
    secrets = submitted_secrets(secret)
    # A 403 keeps its message; a policy may quote anything of the object in it.
    line = PRIVATE_KEY.splitlines()[1]
    body = {"kind": "Status", "code": 403, "message": f"denied: passphrase-1 {line} {profile.text}"}
    text = str(from_response(403, "Forbidden", body, secrets))
    assert "passphrase-1" not in text
    assert line not in text
    assert "warehouse" not in text.lower()
    assert "denied" in text


def test_a_secret_under_a_secret_sounding_target_redacts_only_secret_keys() -> None:
    """Only the nearest key is judged: a target named like a key pair holds no secret host."""
    fields = conn(
        "postgres",
        host="warehouse.internal",
        port=15432,
        login="dbt",
        password=PASSWORD,
        schema="analytics",
    )
    profile = render_profile(fields, target="snowflake_keypair")
    secrets = submitted_secrets(render_profile_secret(SPEC, IDENTITY, profile))
    assert PASSWORD in secrets
    for ordinary in ("warehouse.internal", "15432", "analytics", "public"):
        assert ordinary not in secrets


def test_with_target_renames_the_one_output_and_keeps_the_rest() -> None:
    profile = render_profile(CONNECTIONS["postgres"], target="prod")
    renamed = with_target(profile, "ci")
    assert renamed.target == "ci"
    assert renamed.secrets == profile.secrets
    document = yaml.safe_load(renamed.text)["kubedbt"]
    assert document["target"] == "ci"
    assert document["outputs"] == {"ci": yaml.safe_load(profile.text)["kubedbt"]["outputs"]["prod"]}
    assert with_target(profile, "prod") is profile
