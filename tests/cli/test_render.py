"""`kubectl dbt render`: the operator's manifests from a parameters file, without a cluster."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from tests.cli.conftest import FinishedRuns, Invoke

PARAMETERS = """\
command: build
select: [tag:daily]
vars: {run_date: "2026-11-01"}
image: kubedbt/dbt:dev
sidecar_image: kubedbt/sidecar:dev
image_pull_policy: IfNotPresent
service_account_name: dbt
container_resources: {limits: {memory: 1Gi}}
"""
CLUSTER_BIN = "/var/lib/kubedbt-cluster/bin"


@pytest.fixture
def parameters(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMETERS)
    return path


def _documents(text: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(text))


def _dbt_args(job: dict[str, Any]) -> list[str]:
    """dbt's arguments: what the launcher runs after its own options and `dbt`."""
    (dbt,) = job["spec"]["template"]["spec"]["containers"]
    assert dbt["name"] == "dbt"
    args = list(dbt["args"])
    command = args[args.index("--") + 1 :]
    assert command[0] == "dbt"
    return command[1:]


def test_render_prints_the_job_then_its_configmap(kubectl_dbt: Invoke, parameters: Path) -> None:
    result = kubectl_dbt("render", "-f", str(parameters), "-n", "analytics")
    assert (result.code, result.err) == (0, "")
    job, configmap = _documents(result.out)
    assert [job["kind"], configmap["kind"]] == ["Job", "ConfigMap"]
    assert _dbt_args(job) == [
        "build",
        "--select",
        "tag:daily",
        "--vars",
        "{run_date: '2026-11-01'}",
        "--target-path",
        "/kubedbt/target",
        "--log-path",
        "/kubedbt/logs",
        "--log-format-file",
        "json",
    ]
    # Exactly what the operator renders for the default identity.
    spec = DbtRunSpec.from_mapping({**yaml.safe_load(PARAMETERS), "namespace": "analytics"})
    identity = RunIdentity(dag_id="dag", task_id="task", run_id="manual__render")
    assert job == render_job(spec, identity)
    assert configmap == render_results_configmap(spec, identity)


def test_render_takes_the_identity_from_flags(kubectl_dbt: Invoke, parameters: Path) -> None:
    flags = ["--dag-id", "daily_marts", "--task-id", "dbt_build", "--run-id", "scheduled__x+y"]
    result = kubectl_dbt("render", "-f", str(parameters), *flags, "--try-number", "3")
    assert result.code == 0, result.err
    job, configmap = _documents(result.out)
    identity = RunIdentity("daily_marts", "dbt_build", "scheduled__x+y", try_number=3)
    spec = DbtRunSpec.from_mapping(yaml.safe_load(PARAMETERS))
    assert job == render_job(spec, identity)
    assert job["metadata"]["name"].endswith("-t3")
    assert job["metadata"]["annotations"]["kubedbt.io/run-id"] == "scheduled__x+y"
    assert configmap["metadata"]["name"] == job["metadata"]["name"] + "-results"


def test_render_reads_stdin(
    kubectl_dbt: Invoke, monkeypatch: pytest.MonkeyPatch, parameters: Path
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(parameters.read_text()))
    result = kubectl_dbt("render", "-f", "-", "--map-index", "4")
    assert result.code == 0, result.err
    job, _ = _documents(result.out)
    assert job["metadata"]["labels"]["kubedbt.io/map-index"] == "4"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "comand: build\nimage: x\n",
            "invalid parameter 'comand': unknown parameter; did you mean 'command'?",
        ),
        ("command: build\n", "invalid parameter 'image': required"),
        (
            "command: test\nimage: x\nfull_refresh: true\n",
            "invalid parameter 'full_refresh': dbt test does not accept it",
        ),
        ("command: build\nimage: x\nthreads: 0\n", "invalid parameter 'threads'"),
        ("- command: build\n", "must be a mapping of DbtRunSpec parameters, not a list"),
        ("command: [build\n", "is not valid YAML"),
        (
            "command: build\nimage: x\nnamespace: a\n",
            "the parameters' namespace 'a' does not match --namespace 'b'",
        ),
    ],
)
def test_render_refuses_invalid_parameters(
    kubectl_dbt: Invoke, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(content)
    result = kubectl_dbt("render", "-f", str(path), "-n", "b")
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith("error: ")
    assert message in result.err, result.err
    assert len(result.err.splitlines()) == 1


def test_render_refuses_an_invalid_identity(kubectl_dbt: Invoke, parameters: Path) -> None:
    result = kubectl_dbt("render", "-f", str(parameters), "--try-number", "0")
    assert result.code == 2
    assert "invalid parameter 'try_number'" in result.err


def test_render_needs_a_file(kubectl_dbt: Invoke, tmp_path: Path) -> None:
    result = kubectl_dbt("render", "-f", str(tmp_path / "missing.yaml"))
    assert result.code == 2
    assert (
        result.err == f"error: cannot read {tmp_path / 'missing.yaml'}: No such file or directory\n"
    )
    assert kubectl_dbt("render").code == 2  # -f is required


@pytest.mark.cluster
def test_kubectl_accepts_the_rendered_stream(
    kubectl_dbt: Invoke, parameters: Path, finished_runs: FinishedRuns, kubeconfig: Path
) -> None:
    kubectl = shutil.which("kubectl", path=f"{CLUSTER_BIN}{os.pathsep}{os.environ['PATH']}")
    if kubectl is None:
        pytest.fail(f"no kubectl in {CLUSTER_BIN} or on PATH (make cluster-up)")
    result = kubectl_dbt("render", "-f", str(parameters), "-n", finished_runs.namespace)
    assert result.code == 0, result.err
    applied = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "apply", "--dry-run=server", "-f", "-"],
        input=result.out,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        "job.batch/dbt-dag-task-436a5b23cd-t1 created (server dry run)",
        "configmap/dbt-dag-task-436a5b23cd-t1-results created (server dry run)",
    ]
