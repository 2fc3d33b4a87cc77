"""Fixtures of the end-to-end tests: a namespace with the sidecar's RBAC, and a DAG runner.

DAGs run through Airflow itself (dag.test in a subprocess, see run_dag.py) against the local
cluster, with the real dbt and sidecar images. The admin kubeconfig is only used to prepare
namespaces and to look at what the runs left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests import cluster_ops
from tests.conftest import (
    launcher_token,
    namespace_with_chart,
    node_address,
    write_kubeconfig,
)
from tests.e2e.run_dag import REPORT_PREFIX

REPO = Path(__file__).parents[2]
DAGS = Path(__file__).parent / "dags" / "e2e_dags.py"


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace with the helm chart installed: the `dbt` ServiceAccount the pods run as,
    the sidecar's Role, and the launcher identity the Airflow side uses."""
    with namespace_with_chart(
        api_client, "kubedbt-e2e", "launcher.createServiceAccount=true"
    ) as name:
        yield name


@pytest.fixture
def launcher_kubeconfig(api_client: client.ApiClient, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig for the chart's launcher ServiceAccount: what Airflow gets, not cluster-admin,
    so a permission the chart lacks fails the tests."""
    path = tmp_path / "launcher.kubeconfig"
    write_kubeconfig(path, api_client, namespace, launcher_token(api_client, namespace))
    return path


@pytest.fixture(scope="session")
def airflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AIRFLOW_HOME with a migrated metadata database, copied for every DAG run."""
    home = tmp_path_factory.mktemp("airflow-template")
    env = {**os.environ, **_airflow_env(home)}
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return home


def _airflow_env(home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS.parent),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
    }


@dataclass
class DagRun:
    """What one DAG run did, as run_dag.py reported it."""

    report: dict[str, Any]
    output: str

    @property
    def task(self) -> dict[str, Any]:
        return self.report["tasks"]["build:-1"]

    @property
    def xcom(self) -> dict[str, Any]:
        return self.report["xcom"].get("build:-1", {})


@dataclass
class DagRunner:
    template: Path
    namespace: str
    workdir: Path
    node_ip: str
    kubeconfig: Path
    host_dir: Path  # the DAGs' hostPath volumes: a directory the node sees too

    def start(
        self, dag_id: str, *, conf: dict[str, Any] | None = None, logical_date: str | None = None
    ) -> subprocess.Popen[str]:
        home = self.workdir / f"airflow-{uuid.uuid4().hex[:8]}"
        shutil.copytree(self.template, home)
        kubeconfig = str(self.kubeconfig)
        env = {
            **os.environ,
            **_airflow_env(home),
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
                {"conn_type": "kubernetes", "extra": {"kube_config_path": kubeconfig}}
            ),
            "KUBEDBT_E2E_NAMESPACE": self.namespace,
            "KUBEDBT_E2E_NODE_IP": self.node_ip,
            "KUBEDBT_E2E_HOST_DIR": str(self.host_dir),
        }
        command = [
            sys.executable,
            "-m",
            "tests.e2e.run_dag",
            str(DAGS),
            dag_id,
            "--conf",
            json.dumps(conf or {}),
        ]
        if logical_date:
            command += ["--logical-date", logical_date]
        return subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def finish(self, process: subprocess.Popen[str], timeout: float = 600) -> DagRun:
        output, _ = process.communicate(timeout=timeout)
        reports = [line for line in output.splitlines() if line.startswith(REPORT_PREFIX)]
        assert reports, f"the DAG run printed no report:\n{output[-6000:]}"
        return DagRun(json.loads(reports[-1][len(REPORT_PREFIX) :]), output)

    def run(self, dag_id: str, **kwargs: Any) -> DagRun:
        return self.finish(self.start(dag_id, **kwargs))


@pytest.fixture
def dag_runner(
    airflow_template: Path,
    namespace: str,
    tmp_path: Path,
    api_client: client.ApiClient,
    launcher_kubeconfig: Path,
) -> Iterator[DagRunner]:
    tmp_path.chmod(0o755)
    with cluster_ops.node_dir("e2e") as host_dir:
        yield DagRunner(
            airflow_template,
            namespace,
            tmp_path,
            node_address(api_client),
            launcher_kubeconfig,
            host_dir,
        )
