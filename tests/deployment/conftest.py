"""Fixtures of the fault tests: the real Airflow deployment, a namespace for it, and a recorder.

The deployment (make airflow-up: PostgreSQL, scheduler, dag-processor, triggerer, api-server as
host processes) is driven only from outside: DAG runs are triggered and task states read through
Airflow's REST API, and components are killed and restarted with tests/airflow/airflow.sh. Airflow
reaches the cluster as its own ServiceAccount (airflow/airflow), bound to the chart's launcher Role
in the test namespace exactly as a platform engineer would bind it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from tests.airflow.client import AirflowClient
from tests.conftest import namespace_with_chart, unavailable
from tests.deployment.recorder import Recorder

REPO = Path(__file__).parents[2]
AIRFLOW_SH = REPO / "tests" / "airflow" / "airflow.sh"


@pytest.fixture(scope="session")
def airflow() -> AirflowClient:
    """The REST client of the running deployment; its absence fails under make test."""
    api = AirflowClient()
    if not api.healthy():
        unavailable(f"no Airflow deployment answers at {api.base_url} (make airflow-up)")
    return api


@pytest.fixture(scope="session")
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A namespace with the chart installed and Airflow's ServiceAccount as its launcher."""
    with namespace_with_chart(
        api_client,
        "kubedbt-faults",
        "launcher.createServiceAccount=false",
        "launcher.subjects[0].kind=ServiceAccount",
        "launcher.subjects[0].name=airflow",
        "launcher.subjects[0].namespace=airflow",
    ) as name:
        yield name


@pytest.fixture
def recorder(api_client: client.ApiClient, namespace: str) -> Iterator[Recorder]:
    watching = Recorder(api_client, namespace).start()
    try:
        yield watching
    finally:
        watching.stop()


def component(action: str, name: str) -> None:
    """`airflow.sh ACTION NAME`: stop, start, kill or restart one Airflow component."""
    subprocess.run([str(AIRFLOW_SH), action, name], check=True, timeout=300)


def kill_worker(ti_id: str) -> list[int]:
    """SIGKILL the process running a task instance and the executor worker supervising it.

    The task runner sets its title to `airflow worker -- <ti id>`; its parent is the
    LocalExecutor worker that supervises it. Both die, as on a crashed worker machine.
    """
    runners = [pid for pid, cmdline in _processes() if ti_id in cmdline]
    assert runners, f"no process runs task instance {ti_id}"
    victims = set(runners)
    for pid in runners:
        parent = _parent(pid)
        if "LocalExecutor" in dict(_processes()).get(parent, ""):
            victims.add(parent)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    return sorted(victims)


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            found.append((int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace")))
    return found


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])
