"""A dbt project kubedbt's tests did not write, built by `make project-image` and run by Airflow.

The project is dbt's own starter project (`dbt init`), with its own conventions: its `not_null`
test on my_first_dbt_model fails by design. One test builds it as it is, with a `local:` package
to vendor, and checks that failure comes back with the right kind, counts and test; the other
follows the README's "Run your own project" as written and checks the run succeeds. Both run the
DAG `make project-image` printed, through Airflow (dag.test, see run_dag.py), against the local
cluster with the image the target built and imported.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from kubedbt.core import naming, results
from kubedbt.core.project import containerd_name
from tests import cluster_ops
from tests.conftest import unavailable
from tests.e2e import conftest as e2e_conftest
from tests.e2e.conftest import DagRun, DagRunner

pytestmark = pytest.mark.cluster

REPO = Path(__file__).parents[2]
README = REPO / "README.md"
START = "<!-- own-project:start -->"
END = "<!-- own-project:end -->"
NOT_RUN = "<!-- own-project:not-run"
DBT = REPO / ".venv-dbt" / "bin" / "dbt"
DOCKER = cluster_ops.DOCKER
# What `make project-image` says when the image reached the cluster (images/project/build.py).
IMPORTED = "loaded into the kind cluster" if cluster_ops.KIND else "imported into the local cluster"
TASK = "dbt_build:-1"
# dbt's starter project names its tests the same whatever the project is called.
NOT_NULL_TEST = "not_null_my_first_dbt_model_id.5fb22c2710"
STARTER_MODEL = Path("models/example/my_first_dbt_model.sql")


@pytest.fixture(scope="module", autouse=True)
def base_images() -> None:
    """The images make project-image builds on and the DAG runs with (make images), and dbt."""
    if not DBT.exists():
        unavailable(f"no {DBT} to run dbt init with (make dbt-venv)")
    for image in ("kubedbt/dbt:dev", "kubedbt/sidecar:dev"):
        found = subprocess.run([DOCKER, "image", "inspect", image], capture_output=True)
        if found.returncode != 0:
            unavailable(f"no {image} in docker (make images)")


@pytest.fixture
def remove_image() -> Iterator[Callable[[str], None]]:
    """Remove the images a test built, from docker and from the cluster, when it ends."""
    images: list[str] = []
    yield images.append
    for image in images:
        subprocess.run([DOCKER, "rmi", "--force", image], capture_output=True)
        cluster_ops.remove_image(containerd_name(image))


# What a make that runs these tests (make test-e2e) hands its children: a make started with them
# prints "Entering directory" on stdout, which a person's shell would never get.
_MAKE_VARIABLES = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")


def _user_env(home: Path, namespace: str) -> dict[str, str]:
    """The environment of a person's shell: this process's, without make's, HOME a test dir."""
    env = {k: v for k, v in os.environ.items() if k not in _MAKE_VARIABLES}
    return {**env, "HOME": str(home), "NAMESPACE": namespace}


def _dbt_init(workdir: Path, name: str, home: Path) -> Path:
    """dbt's starter project, as `dbt init` writes it."""
    env = {**os.environ, "HOME": str(home)}
    subprocess.run(
        [str(DBT), "init", name, "--skip-profile-setup"],
        cwd=workdir, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return workdir / name


def _run_dag(
    dag_runner: DagRunner, monkeypatch: pytest.MonkeyPatch, source: str, dag_id: str
) -> DagRun:
    """Run a DAG file's text through Airflow, as the DAGs folder's only file."""
    dag_file = dag_runner.workdir / "dags" / f"{dag_id}.py"
    dag_file.parent.mkdir()
    dag_file.write_text(source)
    monkeypatch.setattr(e2e_conftest, "DAGS", dag_file)
    return dag_runner.run(dag_id)


def _figures(stderr: str) -> str:
    """What make project-image said it took: the docker build and the import."""
    took = re.findall(r"^\[project-image\] (built|imported).* in ([0-9.]+s)$", stderr, re.M)
    return ", ".join(f"{what} in {seconds}" for what, seconds in took)


def _run_results(api_client: client.ApiClient, run: DagRun) -> dict[str, str]:
    """unique_id -> status of the run's results, read from its results ConfigMap."""
    xcom = run.report["xcom"][TASK]
    name = xcom["job_name"] + naming.RESULTS_SUFFIX
    configmap = client.CoreV1Api(api_client).read_namespaced_config_map(name, xcom["namespace"])
    decoded = results.decode(api_client.sanitize_for_serialization(configmap))
    assert decoded.run_results, decoded.upload_error
    return {r["unique_id"]: r["status"] for r in decoded.run_results["results"]}


# --- dbt's starter project, with a local package, failing its own test ---

LOCAL_PACKAGE = {
    "dbt_project.yml": "name: shop_utils\nversion: '1.0.0'\nconfig-version: 2\n",
    "models/shop_utils_orders.sql": "select 1 as order_id\n",
}


def _add_local_package(project: Path) -> None:
    for relative, text in LOCAL_PACKAGE.items():
        path = project / "packages" / "shop_utils" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (project / "packages.yml").write_text("packages:\n  - local: packages/shop_utils\n")


def test_dbt_starter_project_with_a_local_package(
    dag_runner: DagRunner,
    api_client: client.ApiClient,
    monkeypatch: pytest.MonkeyPatch,
    remove_image: Callable[[str], None],
    measured: Callable[[str], None],
) -> None:
    home = dag_runner.workdir / "home"
    home.mkdir()
    project = _dbt_init(dag_runner.workdir, "starter_shop", home)
    _add_local_package(project)
    (project / "profiles.yml").write_text(
        "starter_shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        "      path: /kubedbt/starter_shop.duckdb\n"
    )
    image = "kubedbt-test/starter-shop:e2e"
    remove_image(image)
    started = time.monotonic()
    built = subprocess.run(
        ["make", "--no-print-directory", "project-image", f"PROJECT={project}", f"IMAGE={image}"],
        cwd=REPO, env=_user_env(home, dag_runner.namespace),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert built.returncode == 0, built.stderr[-5000:]
    assert "dbt deps runs in the build" in built.stderr
    assert IMPORTED in built.stderr, built.stderr[-3000:]
    _check_image(image)

    run = _run_dag(dag_runner, monkeypatch, built.stdout, "starter_shop")
    task = run.report["tasks"][TASK]
    assert task["state"] == "failed", run.output[-5000:]
    assert task["try_number"] == 1, "a failing data test is not retried"
    xcom = run.report["xcom"][TASK]
    assert xcom["outcome"]["kind"] == "tests_failed", xcom["outcome"]
    summary = xcom["summary"]
    # The starter's two models and four tests, and the vendored package's model.
    assert summary["nodes"] == 7
    assert summary["counts"] == {"success": 2, "fail": 1, "pass": 1, "skipped": 3}
    (failure,) = summary["failures"]
    assert failure["unique_id"] == f"test.starter_shop.{NOT_NULL_TEST}"
    statuses = _run_results(api_client, run)
    assert statuses["model.shop_utils.shop_utils_orders"] == "success"
    assert statuses["model.starter_shop.my_second_dbt_model"] == "skipped"
    measured(f"make project-image {seconds:.1f}s ({_figures(built.stderr)})")


def _check_image(image: str) -> None:
    """The project is root-owned at /usr/app/<name>, its package a copy, not a link."""

    def run(*args: str) -> str:
        done = subprocess.run(
            [DOCKER, "run", "--rm", "--entrypoint", *args], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    project = "/usr/app/starter_shop"
    assert run("find", image, project, "!", "-user", "root") == ""
    package = f"{project}/dbt_packages/shop_utils"
    assert run("stat", image, "-c", "%F %U %a", package).split() == ["directory", "root", "755"]
    assert run("ls", image, project).split().count("target") == 0
    env = subprocess.run(
        [DOCKER, "image", "inspect", "--format", "{{json .Config.Env}}", image],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f'"DBT_PROJECT_DIR={project}"' in env
    assert f'"DBT_PROFILES_DIR={project}"' in env


# --- the README's walkthrough, as written ---


def _readme_section() -> str:
    text = README.read_text()
    assert START in text, f"README.md lost its {START} marker"
    return text[text.index(START) + len(START) : text.index(END)]


def _blocks(section: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block the test follows: every block but those right
    after an own-project:not-run comment."""
    found = []
    pattern = re.compile(r"(<!--[^\n]*-->\n)?```(\w*)\n(.*?)```\n", re.S)
    for match in pattern.finditer(section):
        comment, language, body = match.groups()
        if comment and comment.startswith(NOT_RUN):
            continue
        found.append((language, body))
    return found


SEPARATOR = "KUBEDBT-README-BLOCK"


def test_the_readme_walkthrough(
    dag_runner: DagRunner,
    monkeypatch: pytest.MonkeyPatch,
    remove_image: Callable[[str], None],
    measured: Callable[[str], None],
) -> None:
    """Every console block in one shell, as a person would: from the checkout, with $HOME a
    directory of the test's own and NAMESPACE the test's namespace (the DAG's default is the
    demo's). Then the python block must be what make printed, and that DAG must succeed."""
    blocks = _blocks(_readme_section())
    shell = [body for language, body in blocks if language == "console"]
    (readme_dag,) = [body for language, body in blocks if language == "python"]
    assert len(shell) >= 3, "the walkthrough lost its commands"
    remove_image("my-shop:dev")
    home = dag_runner.workdir / "home"
    home.mkdir()
    script = "set -euo pipefail\n" + "".join(
        f"echo {SEPARATOR}\n{body}" for body in shell
    )  # a marker before each block splits the output
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO, env=_user_env(home, dag_runner.namespace),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    outputs = done.stdout.split(f"{SEPARATOR}\n")[1:]
    (printed,) = [out for body, out in zip(shell, outputs, strict=True) if "project-image" in body]
    expected = readme_dag.replace('namespace="kubedbt-demo"', f'namespace="{dag_runner.namespace}"')
    assert printed == expected, "the README's DAG is not what make project-image prints"

    run = _run_dag(dag_runner, monkeypatch, printed, "my_shop")
    task = run.report["tasks"][TASK]
    assert task["state"] == "success", run.output[-5000:]
    summary = run.report["xcom"][TASK]["return_value"]
    assert summary["nodes"] == 6
    assert summary["counts"] == {"success": 2, "pass": 4}
    measured(f"README commands {seconds:.1f}s ({_figures(done.stderr)})")
