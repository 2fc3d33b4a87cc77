"""The checks `make project-image` runs on a user's dbt project, and the DAG it prints."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from kubedbt.core.project import (
    DagOptions,
    Project,
    ProjectError,
    check_profiles,
    containerd_name,
    flag,
    image_reference,
    literal_secrets,
    local_packages,
    project_notes,
    read_project,
    render_dag,
    resolve,
    uses_external_materialization,
)

REPO = Path(__file__).parents[2]
SHOP = Project(name="my_shop", profile="my_shop", packages_install_path="dbt_packages")

# dbt-labs/jaffle_shop_duckdb's profiles.yml as published (commit 307b19d6), unchanged: the
# project of the issue, whose database file lands next to the project.
JAFFLE_SHOP_DUCKDB_PROFILES = """\
jaffle_shop:

  target: dev
  outputs:
    dev:
      type: duckdb
      path: 'jaffle_shop.duckdb'
      threads: 24
      schema: dev
    prod:
      type: duckdb
      path: 'jaffle_shop.duckdb'
      threads: 24
      schema: prod
    motherDuck:
      type: duckdb
      path: "md:jaffle_shop?motherduck_token={{env_var('motherduck_token')}}"
      threads: 24
      schema: dev
    motherDuckProd:
      type: duckdb
      path: "md:jaffle_shop?motherduck_token={{env_var('motherduck_token')}}"
      threads: 24
      schema: prod
"""


# --- dbt_project.yml ---


def test_read_project_of_dbt_init() -> None:
    # What `dbt init my_shop --skip-profile-setup` writes, trimmed to the keys read.
    text = "name: 'my_shop'\nversion: '1.0.0'\nprofile: 'my_shop'\nmodel-paths: ['models']\n"
    assert read_project(text) == SHOP
    assert SHOP.image_dir == "/usr/app/my_shop"


def test_read_project_of_the_example_project() -> None:
    text = (REPO / "examples" / "jaffle_shop" / "dbt_project.yml").read_text()
    assert read_project(text) == Project(
        name="jaffle_shop", profile="jaffle_shop", packages_install_path="dbt_packages"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: [unclosed", "is not valid YAML"),
        ("- a list", "is not a mapping"),
        ("version: 1", "name None is not a dbt project name"),
        ("name: ../escape", "is not a dbt project name"),
        ("name: 1shop", "is not a dbt project name"),
        ('name: "shop\\n"', "is not a dbt project name"),
        ("name: shop\nprofile: [a]", "profile ['a'] is not a string"),
        ("name: shop\npackages-install-path: /opt/packages", "is not a directory inside"),
        ("name: shop\npackages-install-path: ../packages", "is not a directory inside"),
    ],
)
def test_read_project_refuses(text: str, says: str) -> None:
    with pytest.raises(ProjectError) as caught:
        read_project(text)
    assert caught.value.where == "dbt_project.yml"
    assert says in str(caught.value)


def test_a_nested_packages_directory_is_kept_normalised() -> None:
    project = read_project("name: shop\npackages-install-path: ./deps//packages/\n")
    assert project.packages_install_path == "deps/packages"


def test_target_and_log_paths_are_said_to_be_overridden() -> None:
    notes = project_notes("name: shop\ntarget-path: build\nlog-path: logs\n")
    assert len(notes) == 2
    assert "--target-path under /kubedbt" in notes[0]
    assert project_notes("name: shop\n") == []


# --- packages ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("packages:\n  - local: packages/utils\n", ["packages/utils"]),
        ("packages:\n  - local: ./utils/\n  - package: dbt-labs/dbt_utils\n", ["utils"]),
        ("packages:\n  - git: https://example.com/x.git\n    revision: v1\n", []),
        ("projects:\n  - name: upstream\n", []),
        ("", []),
    ],
)
def test_local_packages(text: str, expected: list[str]) -> None:
    assert local_packages(text, "packages.yml") == expected


@pytest.mark.parametrize("path", ["../shared", "/opt/shared", "utils/../../x"])
def test_a_local_package_outside_the_project_is_refused(path: str) -> None:
    with pytest.raises(ProjectError) as caught:
        local_packages(f"packages:\n  - local: {path}\n", "dependencies.yml")
    assert caught.value.where == "dependencies.yml"
    assert "outside the project directory" in str(caught.value)


def test_packages_not_a_list_is_refused() -> None:
    with pytest.raises(ProjectError, match="packages is not a list"):
        local_packages("packages: dbt-labs/dbt_utils\n", "packages.yml")


@pytest.mark.parametrize(
    ("text", "external"),
    [
        ("{{ config(materialized='external', location='/kubedbt/x.parquet') }}", True),
        ('{{ config(materialized="external") }}', True),
        ("models:\n  shop:\n    +materialized: external\n", True),
        ("models:\n  - name: x\n    config:\n      materialized: external\n", True),
        ("{{ config(materialized='table') }}", False),
        ("-- an externally loaded table", False),
    ],
)
def test_external_materialization(text: str, external: bool) -> None:
    assert uses_external_materialization([text]) is external


# --- env_var() in profile values ---


@pytest.mark.parametrize(
    ("value", "resolved", "env_vars", "templated"),
    [
        ("/kubedbt/x.duckdb", "/kubedbt/x.duckdb", (), False),
        ("{{ env_var('DBT_PATH', 'x.duckdb') }}", "x.duckdb", ("DBT_PATH",), False),
        ('{{env_var("DBT_PATH","/kubedbt/x.duckdb")}}', "/kubedbt/x.duckdb", ("DBT_PATH",), False),
        ("/kubedbt/{{ env_var('NAME', 'shop') }}.duckdb", "/kubedbt/shop.duckdb", ("NAME",), False),
        ("{{ env_var('DBT_PATH') }}", None, ("DBT_PATH",), False),
        ("{{ env_var('DBT_PATH', 'x') | lower }}", None, (), True),
        ("{{ var('path') }}", None, (), True),
        ("{% if true %}a{% endif %}", None, (), True),
    ],
)
def test_resolve(
    value: str, resolved: str | None, env_vars: tuple[str, ...], templated: bool
) -> None:
    result = resolve(value)
    assert (result.value, result.env_vars, result.templated) == (resolved, env_vars, templated)


# --- profiles.yml ---


def _profile(output: dict[str, Any], *, target: str = "dev") -> str:
    import yaml

    return yaml.safe_dump({"my_shop": {"target": target, "outputs": {"dev": output}}})


def _duckdb(**settings: Any) -> str:
    return _profile({"type": "duckdb", "threads": 1, **settings})


def test_the_published_jaffle_shop_duckdb_profile_is_caught() -> None:
    project = Project(
        name="jaffle_shop", profile="jaffle_shop", packages_install_path="dbt_packages"
    )
    check = check_profiles(JAFFLE_SHOP_DUCKDB_PROFILES, project)
    assert [f.where for f in check.findings] == [
        "profiles.yml: jaffle_shop.outputs.dev.path",
        "profiles.yml: jaffle_shop.outputs.prod.path",
    ]
    finding = check.findings[0]
    assert "'jaffle_shop.duckdb' is relative" in finding.problem
    assert "/usr/app/jaffle_shop, which is read-only in the pod" in finding.problem
    assert finding.fix.startswith("path: /kubedbt/jaffle_shop.duckdb; /kubedbt is per run")
    assert "needs a volume" in finding.fix
    # MotherDuck is not a file: nothing to check, and the token's env var is not a problem.
    assert check.notes == []


def test_the_example_project_profile_passes() -> None:
    text = (REPO / "examples" / "jaffle_shop" / "profiles" / "profiles.yml").read_text()
    project = read_project((REPO / "examples" / "jaffle_shop" / "dbt_project.yml").read_text())
    check = check_profiles(text, project, where="profiles/profiles.yml")
    assert check.findings == []
    assert len(check.notes) == 1
    assert "/kubedbt is the run's own emptyDir" in check.notes[0]


@pytest.mark.parametrize(
    ("profile", "where", "problem"),
    [
        (_duckdb(path="shop.duckdb"), ".dev.path", "'shop.duckdb' is relative"),
        (_duckdb(path="./data/shop.duckdb"), ".dev.path", "is relative"),
        (_duckdb(path="/usr/app/my_shop/shop.duckdb"), ".dev.path", "inside the project"),
        (_duckdb(path="/data/shop.duckdb"), ".dev.path", "outside /kubedbt"),
        (_duckdb(path="/kubedbtx/shop.duckdb"), ".dev.path", "outside /kubedbt"),
        (_duckdb(path="~/shop.duckdb"), ".dev.path", "under the home directory"),
        (
            _duckdb(path="{{ env_var('SHOP_DB', 'shop.duckdb') }}"),
            ".dev.path",
            "'shop.duckdb' (the default of env_var('SHOP_DB')) is relative",
        ),
        (
            _duckdb(path=":memory:", attach=[{"path": "other.duckdb", "alias": "other"}]),
            ".dev.attach[0].path",
            "is relative",
        ),
        (
            _duckdb(path=":memory:", settings={"temp_directory": "tmp"}),
            ".dev.settings.temp_directory",
            "is relative",
        ),
        (_duckdb(path=":memory:", external_root="out"), ".dev.external_root", "is relative"),
    ],
)
def test_paths_outside_kubedbt_are_findings(profile: str, where: str, problem: str) -> None:
    check = check_profiles(profile, SHOP)
    (finding,) = check.findings
    assert finding.where == f"profiles.yml: my_shop.outputs{where}"
    assert problem in finding.problem


@pytest.mark.parametrize(
    ("where", "fix"),
    [
        (".dev.path", "path: /kubedbt/my_shop.duckdb (or set SHOP_DB in the pod with env_vars=)"),
        (".dev.attach[0].path", "path: /kubedbt/other.duckdb;"),
        (".dev.external_root", "external_root: /kubedbt/external"),
    ],
)
def test_each_finding_has_its_fix(where: str, fix: str) -> None:
    profile = _duckdb(
        path="{{ env_var('SHOP_DB', 'shop.duckdb') }}",
        attach=[{"path": "other.duckdb", "alias": "other"}],
        external_root="out",
    )
    findings = {f.where: f.fix for f in check_profiles(profile, SHOP).findings}
    assert findings[f"profiles.yml: my_shop.outputs{where}"].startswith(fix)


@pytest.mark.parametrize(
    "profile",
    [
        _duckdb(path="/kubedbt/shop.duckdb"),
        _duckdb(path="{{ env_var('SHOP_DB', '/kubedbt/shop.duckdb') }}"),
        _duckdb(path=":memory:"),
        _duckdb(),
        _duckdb(path="md:shop"),
        _duckdb(path="s3://bucket/shop.duckdb"),
        _duckdb(path=":memory:", attach=[{"path": "s3://bucket/ref.duckdb", "read_only": True}]),
        _duckdb(path=":memory:", attach=[{"path": "ref.duckdb", "read_only": True}]),
        _duckdb(path=":memory:", external_root="/kubedbt/out"),
        _profile({"type": "postgres", "host": "db", "dbname": "shop", "schema": "x"}),
        _profile({"type": "{{ env_var('DBT_TYPE', 'postgres') }}", "path": "relative.db"}),
    ],
)
def test_nothing_written_outside_kubedbt_passes(profile: str) -> None:
    assert check_profiles(profile, SHOP).findings == []


def test_external_models_need_a_writable_external_root() -> None:
    profile = _duckdb(path=":memory:")
    assert check_profiles(profile, SHOP).findings == []
    (finding,) = check_profiles(profile, SHOP, uses_external=True).findings
    assert finding.where.endswith(".dev.external_root")
    assert "'.' is relative" in finding.problem


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("{{ env_var('SHOP_DB') }}", "depends on env var SHOP_DB, so it was not checked"),
        ("{{ var('db_path') }}", "Jinja template beyond env_var('X', 'default')"),
    ],
)
def test_paths_that_cannot_be_checked_are_said_so(path: str, says: str) -> None:
    check = check_profiles(_duckdb(path=path), SHOP)
    assert check.findings == []
    (note,) = check.notes
    assert note.startswith("profiles.yml: my_shop.outputs.dev.path ")
    assert says in note


def test_a_missing_profile_is_a_finding() -> None:
    text = _duckdb(path="/kubedbt/x.duckdb").replace("my_shop:", "other:")
    (finding,) = check_profiles(text, SHOP).findings
    assert "has no profile 'my_shop' with outputs" in finding.problem
    assert "profiles found: other" in finding.problem
    assert "profile_conn_id" in finding.fix


def test_a_missing_target_output_is_a_finding() -> None:
    profile = _profile({"type": "duckdb", "path": "/kubedbt/x.duckdb"}, target="prod")
    (finding,) = check_profiles(profile, SHOP).findings
    assert finding.where == "profiles.yml: my_shop.target"
    assert "names output 'prod'" in finding.problem


def test_the_profile_defaults_to_the_project_name() -> None:
    project = Project(name="my_shop", profile=None, packages_install_path="dbt_packages")
    assert check_profiles(_duckdb(path="/kubedbt/x.duckdb"), project).findings == []


def test_no_profiles_yml_points_to_profile_conn_id() -> None:
    check = check_profiles(None, SHOP)
    assert check.findings == []
    (note,) = check.notes
    assert "profile_conn_id" in note


# --- images ---


@pytest.mark.parametrize(
    ("image", "in_containerd"),
    [
        ("my-shop:dev", "docker.io/library/my-shop:dev"),
        ("kubedbt/dbt:dev", "docker.io/kubedbt/dbt:dev"),
        (
            "registry.example.com/analytics/my-shop:1.0",
            "registry.example.com/analytics/my-shop:1.0",
        ),
        ("localhost:5901/my-shop:dev", "localhost:5901/my-shop:dev"),
        ("localhost/my-shop:dev", "localhost/my-shop:dev"),
    ],
)
def test_containerd_name(image: str, in_containerd: str) -> None:
    assert image_reference(image) == image
    assert containerd_name(image) == in_containerd


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("my-shop", "has no tag"),
        ("My-Shop:dev", "is not an image name"),
        ("", "is not an image name"),
        ("my shop:dev", "is not an image name"),
        ("my-shop:dev;rm -rf /", "is not an image name"),
        ("my-shop@sha256:abc", "is not an image name"),
        ("my-shop:dev\n", "is not an image name"),
    ],
)
def test_bad_images_are_refused_naming_image(image: str, says: str) -> None:
    with pytest.raises(ProjectError) as caught:
        image_reference(image)
    assert caught.value.where == "IMAGE"
    assert says in str(caught.value)


PINNED = "kubedbt/dbt@sha256:" + "a" * 64


def test_the_images_built_on_may_be_pinned_by_digest() -> None:
    assert image_reference(PINNED, parameter="BASE", digest=True) == PINNED
    assert image_reference(f"kubedbt/dbt:1.0@{PINNED.split('@')[1]}", digest=True)
    with pytest.raises(ProjectError, match="is not an image name"):
        image_reference(PINNED)


# --- yes or no ---


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " 1 "])
def test_flag_yes(value: str) -> None:
    assert flag(value, "IGNORE_CHECKS") is True


@pytest.mark.parametrize("value", ["", "0", "false", "False", "no", "off"])
def test_flag_no(value: str) -> None:
    assert flag(value, "IGNORE_CHECKS") is False


@pytest.mark.parametrize("value", ["2", "y", "enabled", "0 1"])
def test_flag_refuses_anything_else_naming_the_variable(value: str) -> None:
    with pytest.raises(ProjectError) as caught:
        flag(value, "KEEP_DBT_PACKAGES")
    assert caught.value.where == "KEEP_DBT_PACKAGES"
    assert "is neither yes" in str(caught.value)


# --- credentials baked into the image ---


def _output(settings: str) -> str:
    return "my_shop:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n" + "".join(
        f"      {line}\n" for line in settings.splitlines()
    )


@pytest.mark.parametrize(
    ("settings", "keys"),
    [
        ("password: s3cr3t-value", ["my_shop.outputs.dev.password"]),
        ("password: 987654321", ["my_shop.outputs.dev.password"]),  # YAML reads an int
        ("pass: s3cr3t-value\nuser: me", ["my_shop.outputs.dev.pass"]),
        ("token: s3cr3t-value", ["my_shop.outputs.dev.token"]),
        ("private_key: s3cr3t-value", ["my_shop.outputs.dev.private_key"]),
        ("private_key_passphrase: s3cr3t-value", ["my_shop.outputs.dev.private_key_passphrase"]),
        ("motherduck_token: s3cr3t-value", ["my_shop.outputs.dev.motherduck_token"]),
        (
            "keyfile_json:\n  type: service_account\n  private_key: s3cr3t-value",
            ["my_shop.outputs.dev.keyfile_json.private_key"],
        ),
        ("password: \"{{ env_var('DBT_ENV_SECRET_PASSWORD') }}\"", []),
        ("password: \"{{ env_var('PGPASSWORD', 'dev-only') }}\"", []),
        ("password: \"{{ var('password') }}\"", []),
        ("password: ''", []),
        ("user: s3cr3t-value\nhost: db\nport: 5432", []),
    ],
)
def test_literal_credentials_are_warned_about_without_their_value(
    settings: str, keys: list[str]
) -> None:
    warnings = literal_secrets(_output(settings))
    assert [w.split(" is written")[0] for w in warnings] == [f"profiles.yml: {k}" for k in keys]
    for warning in warnings:
        assert "s3cr3t-value" not in warning
        assert "987654321" not in warning
        assert "baked into the image" in warning
        assert "env_var('DBT_ENV_SECRET_" in warning
        assert "secretRef" in warning


def test_every_profile_in_the_file_is_read_for_credentials() -> None:
    text = _output("password: x") + "other:\n  outputs:\n    prod:\n      token: y\n"
    warnings = literal_secrets(text, "profiles/profiles.yml")
    assert [w.split(" is written")[0] for w in warnings] == [
        "profiles/profiles.yml: my_shop.outputs.dev.password",
        "profiles/profiles.yml: other.outputs.prod.token",
    ]
    assert literal_secrets(None) == []


# --- the printed DAG ---


def _options(**overrides: Any) -> DagOptions:
    values: dict[str, Any] = {
        "project": SHOP,
        "image": "my-shop:dev",
        "namespace": "kubedbt-demo",
        "sidecar_image": "kubedbt/sidecar:dev",
        "base_image": "kubedbt/dbt:dev",
    }
    return DagOptions(**{**values, **overrides})


def _operator_call(source: str) -> dict[str, Any]:
    """The keyword arguments of the DbtJobOperator call in `source`, as Python values."""
    call = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DbtJobOperator"
    )
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}


def test_the_dag_runs_the_image_where_the_chart_is() -> None:
    kwargs = _operator_call(render_dag(_options()))
    assert kwargs == {
        "task_id": "dbt_build",
        "command": "build",
        "image": "my-shop:dev",
        "sidecar_image": "kubedbt/sidecar:dev",
        "image_pull_policy": "IfNotPresent",
        "namespace": "kubedbt-demo",
        "service_account_name": "dbt",
        "kubernetes_conn_id": "kubernetes_default",
        "deferrable": True,
        "on_finish_action": "keep_job",
        "retries": 2,
    }


def test_the_dag_names_the_connection_when_there_is_no_profile() -> None:
    assert (
        _operator_call(render_dag(_options(profile_conn_id="warehouse")))["profile_conn_id"]
        == "warehouse"
    )
    assert (
        _operator_call(render_dag(_options(needs_connection=True)))["profile_conn_id"]
        == "CHANGE_ME"
    )


@pytest.mark.parametrize(
    "conn_id",
    ['warehouse"\nimport os', "it's", "both ' and \"", "back\\slash", "caf\u00e9 \U0001f600"],
)
def test_the_dag_quotes_what_it_is_given(conn_id: str) -> None:
    source = render_dag(_options(profile_conn_id=conn_id))
    assert _operator_call(source)["profile_conn_id"] == conn_id
    assert "import os" not in source.replace("\\nimport os", "")


@pytest.mark.parametrize(
    ("option", "value", "parameter"),
    [
        ("base_image", "kubedbt/dbt:dev\nimport os", "BASE"),
        ("base_image", "kubedbt/dbt:dev  # x", "BASE"),
        ("sidecar_image", "kubedbt/sidecar:dev\nimport os", "SIDECAR_IMAGE"),
        ("sidecar_image", 'kubedbt/sidecar:dev"', "SIDECAR_IMAGE"),
        ("image", "my-shop:dev\n", "IMAGE"),
        ("namespace", 'ns"\nimport os', "NAMESPACE"),
        ("namespace", "Kubedbt", "NAMESPACE"),
    ],
)
def test_what_the_dag_cannot_carry_is_refused_naming_it(
    option: str, value: str, parameter: str
) -> None:
    with pytest.raises(ProjectError) as caught:
        _options(**{option: value})
    assert caught.value.where == parameter


def test_a_pinned_base_image_is_in_the_dag_comment() -> None:
    source = render_dag(_options(base_image=PINNED))
    assert f"# {PINNED} with the project at /usr/app/my_shop" in source


def test_the_printed_dag_is_a_dag_airflow_accepts() -> None:
    """Executed as Airflow would parse it: the operator validates every parameter."""
    from kubedbt.airflow import DbtJobOperator

    namespace: dict[str, Any] = {}
    exec(compile(render_dag(_options()), "my_shop.py", "exec"), namespace)
    dag = namespace["dag"]
    assert dag.dag_id == "my_shop"
    (task,) = dag.tasks
    assert isinstance(task, DbtJobOperator)
    assert task.task_id == "dbt_build"
