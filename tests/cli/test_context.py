"""Which kubeconfig, context and namespace a command uses, as kubectl chooses them."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubedbt.cli.context import resolve
from kubedbt.cli.errors import CliError
from tests.cli.conftest import Invoke

CONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
    "users": [{"name": "u", "user": {}}],
    "contexts": [
        {"name": "one", "context": {"cluster": "c", "user": "u"}},
        {"name": "two", "context": {"cluster": "c", "user": "u", "namespace": "analytics"}},
    ],
    "current-context": "two",
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def test_the_current_context_and_its_namespace(config_file: Path) -> None:
    target = resolve(
        kubeconfig=None, context=None, namespace=None, environ={"KUBECONFIG": str(config_file)}
    )
    assert (target.kubeconfig, target.context, target.namespace, target.server) == (
        config_file,
        "two",
        "analytics",
        "https://127.0.0.1:6443",
    )


def test_flags_win(config_file: Path, tmp_path: Path) -> None:
    environ = {"KUBECONFIG": str(tmp_path / "elsewhere")}
    target = resolve(kubeconfig=str(config_file), context="one", namespace=None, environ=environ)
    assert (target.context, target.namespace) == ("one", "default")
    target = resolve(kubeconfig=str(config_file), context="two", namespace="x", environ=environ)
    assert target.namespace == "x"


def test_the_first_existing_file_of_kubeconfig(config_file: Path, tmp_path: Path) -> None:
    listed = f"{tmp_path / 'missing'}:{config_file}:{tmp_path / 'other'}"
    target = resolve(kubeconfig=None, context=None, namespace=None, environ={"KUBECONFIG": listed})
    assert target.kubeconfig == config_file


def test_home_kube_config(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(yaml.safe_dump(CONFIG))
    target = resolve(kubeconfig=None, context=None, namespace=None, environ={"HOME": str(tmp_path)})
    assert target.kubeconfig == tmp_path / ".kube" / "config"


@pytest.mark.parametrize(
    ("environ", "context", "message"),
    [
        ({"HOME": "/nonexistent"}, None, "no kubeconfig: /nonexistent/.kube/config does not exist"),
        ({"KUBECONFIG": "/nonexistent"}, None, "no kubeconfig: KUBECONFIG=/nonexistent names no"),
        ({"KUBECONFIG": "CONFIG"}, "three", "context 'three' is not in kubeconfig"),
    ],
)
def test_what_is_missing_is_named(
    config_file: Path, environ: dict[str, str], context: str | None, message: str
) -> None:
    environ = {k: str(config_file) if v == "CONFIG" else v for k, v in environ.items()}
    with pytest.raises(CliError, match=message):
        resolve(kubeconfig=None, context=context, namespace=None, environ=environ)


def test_no_kubeconfig_is_one_line_and_exit_1(
    kubectl_dbt: Invoke, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    for command in (["runs"], ["logs", "x"], ["results", "x"], ["describe", "x"]):
        result = kubectl_dbt(*command)
        assert (result.code, result.out) == (1, "")
        assert (
            result.err
            == f"error: no kubeconfig: KUBECONFIG={tmp_path / 'missing'} names no existing file\n"
        )


def test_usage_errors_exit_2(kubectl_dbt: Invoke) -> None:
    assert kubectl_dbt().code == 2
    assert kubectl_dbt("runs", "--status", "Done").code == 2
    assert kubectl_dbt("logs").code == 2
    assert kubectl_dbt("results", "x", "-o", "yaml").code == 2
    assert kubectl_dbt("--help").code == 0


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a hung API server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        host, port = listener.getsockname()
        yield f"https://{host}:{port}"


def test_a_cluster_that_does_not_answer_times_out(
    kubectl_dbt: Invoke, silent_server: str, tmp_path: Path
) -> None:
    config = {
        **CONFIG,
        "clusters": [{"name": "c", "cluster": {"server": silent_server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    result = kubectl_dbt("runs", "--kubeconfig", str(path), "--request-timeout", "1")
    assert time.monotonic() - started < 10
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f"error: no answer from the cluster at {silent_server} within 1s (--request-timeout)\n"
    )
