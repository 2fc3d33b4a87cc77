"""What tests do to the test cluster's machinery, for either lane (CLUSTER=local or kind): faults
on its control plane, images removed from its containerd.

The local cluster runs kube-apiserver and etcd as processes of this machine (tests/cluster/up.sh);
kind runs them as static pods in its node container, so a kill there is a SIGKILL inside the node
and a restart puts the pod's manifest back. Either way the API server is gone until
`start_api_server` and etcd keeps running, as when a control-plane node loses its API server.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("KUBEDBT_STATE", "/var/lib/kubedbt-cluster"))
KIND = os.environ.get("CLUSTER", "local") == "kind"
DOCKER = os.environ.get("DOCKER") or shutil.which("/usr/bin/docker") or "docker"
KIND_NODE = "kubedbt-control-plane"
# A directory the node sees at this same path (tests/cluster/lib.sh: shared_dir; kind mounts it):
# where tests put what they give pods as hostPath volumes.
SHARED = STATE / "shared"
_UP = Path(__file__).parent / "cluster" / "up.sh"
_KUBECTL = STATE / "bin" / "kubectl"
# kubeadm's layout in the kind node: the kubelet runs what is in MANIFESTS, and nothing that is not.
_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
_PARKED = "/etc/kubernetes/kube-apiserver.yaml.stopped"
_PKI = "/etc/kubernetes/pki"


@contextlib.contextmanager
def node_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under SHARED, writable by every uid (dbt runs as 1000), removed after."""
    path = SHARED / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o777, parents=True)
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _docker(*args: str) -> str:
    done = subprocess.run([DOCKER, *args], check=True, capture_output=True, text=True, timeout=60)
    return done.stdout


def _in_node(*command: str) -> str:
    return _docker("exec", KIND_NODE, *command)


def kill_api_server() -> None:
    """SIGKILL kube-apiserver; it stays down until `start_api_server`."""
    if not KIND:
        pid = int((STATE / "pids" / "kube-apiserver.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        return
    # Killed first, then its manifest moved away in the same breath, before the kubelet can
    # restart it: the kill is a SIGKILL, not the kubelet's graceful stop of a removed pod.
    _in_node("sh", "-c", f"pkill -9 -x kube-apiserver; mv {_MANIFEST} {_PARKED}")


def start_api_server(timeout: float = 240) -> None:
    """Bring kube-apiserver back, and return once it answers /readyz."""
    if not KIND:
        # The cluster's own up script is idempotent: it starts only what is not running.
        subprocess.run([str(_UP)], check=True, capture_output=True, timeout=timeout)
        return
    _in_node("mv", _PARKED, _MANIFEST)
    deadline = time.monotonic() + timeout
    kubeconfig = f"--kubeconfig={STATE / 'admin.kubeconfig'}"
    while time.monotonic() < deadline:
        ready = subprocess.run(
            [str(_KUBECTL), kubeconfig, "get", "--raw", "/readyz", "--request-timeout=5s"],
            capture_output=True,
        )
        if ready.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"kube-apiserver not ready {timeout:.0f}s after its manifest came back")


@functools.cache
def _kind_etcd() -> tuple[str, ssl.SSLContext]:
    """The kind node's etcd: its URL and a TLS context as the API server's etcd client, with the
    certificate read from the node once."""
    networks = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    address = _docker("inspect", "-f", networks, KIND_NODE).split()[0]
    with tempfile.TemporaryDirectory() as pki:
        for name in ("etcd/ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key"):
            Path(pki, Path(name).name).write_text(_in_node("cat", f"{_PKI}/{name}"))
        context = ssl.create_default_context(cafile=f"{pki}/ca.crt")
        client = f"{pki}/apiserver-etcd-client"
        context.load_cert_chain(f"{client}.crt", f"{client}.key")
    return f"https://{address}:2379", context


def _etcd(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A call to etcd's v3 JSON gateway: plain HTTP on the local cluster's 127.0.0.1:2379; on kind
    TLS to the node's address (_kind_etcd)."""
    url, context = _kind_etcd() if KIND else ("http://127.0.0.1:2379", None)
    request = urllib.request.Request(
        url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def compact_etcd() -> int:
    """Compact etcd's history up to now, so every older resourceVersion is gone; return the
    revision compacted to."""
    key = base64.b64encode(b"/registry/namespaces/default").decode()
    revision = int(_etcd("/v3/kv/range", {"key": key})["header"]["revision"])
    _etcd("/v3/kv/compaction", {"revision": str(revision), "physical": True})
    return revision


def remove_image(name: str) -> None:
    """Remove an image from the node's containerd (its fully qualified name), if it is there."""
    ctr = ["ctr", "--namespace", "k8s.io", "images", "rm", name]
    if KIND:
        ctr = [DOCKER, "exec", KIND_NODE, *ctr]
    subprocess.run(ctr, capture_output=True, timeout=60)
