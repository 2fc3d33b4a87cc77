"""A real S3 server for the artifact upload tests, reachable from the cluster's pods.

It is a throwaway MinIO, built from its Go module on first use (tests/cluster/build-binaries.sh,
cached with the cluster's binaries), with its data in a temporary directory, listening on the
node's address so the uploader in a pod writes to it as it would to S3, with credentials from the
standard AWS env vars. The tests look at the bucket with boto3, a client independent of obstore,
which the uploader uses; they stop the server and start it again (same port, same data) to see
what the uploader does while the store is down.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

REPO = Path(__file__).parents[1]
CLUSTER_SCRIPTS = REPO / "tests" / "cluster"
BUCKET = "kubedbt-artifacts"
REGION = "us-east-1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class _Server:
    """The MinIO process: at most one at a time, always on the same address and data directory."""

    def __init__(self, binary: Path, root: Path, *, host: str, port: int, env: dict[str, str]):
        self._root = root
        self._log = root / "minio.log"
        self._ready_url = f"http://{host}:{port}/minio/health/ready"
        # The certificates directory defaults to ~/.minio/certs; keep even that in the tempdir.
        self._argv = [
            str(binary), "server", "--address", f"{host}:{port}",
            "--certs-dir", str(root / "certs"), str(root / "data"),
        ]  # fmt: skip
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._process is not None:
            return
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                self._argv, env=self._env, cwd=self._root,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"minio exited before it was ready:\n{self._log_tail()}")
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"minio not ready in {READY_TIMEOUT:.0f}s:\n{self._log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self._ready_url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:  # refused while it binds, 503 while its drive is being formatted
            return False

    def _log_tail(self) -> str:
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-20:])


@dataclass(frozen=True)
class ObjectStore:
    """Where an S3 client finds the store, and a view of its one bucket."""

    host: str
    port: int
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    _server: _Server = field(repr=False, compare=False)

    @property
    def endpoint(self) -> str:
        """The S3 endpoint, plain HTTP."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS env vars that point an S3 client in a pod at this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            # obstore refuses a plain HTTP endpoint unless told otherwise.
            "AWS_ALLOW_HTTP": "true",
        }

    def url(self, prefix: str = "") -> str:
        """The s3:// URL of `prefix` in the bucket, or of the bucket itself."""
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def client(self) -> Any:  # boto3 ships no types; its stubs are not a dependency
        """A boto3 S3 client with the root credentials."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            # Short timeouts and few retries, so a test that reads a stopped store fails quickly.
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=30,
                retries={"mode": "standard", "max_attempts": 2},
            ),
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under `prefix`, in S3's (lexicographic) order."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return [str(item["Key"]) for page in pages for item in page.get("Contents", [])]

    def get(self, key: str) -> bytes:
        """The content of the object `key`."""
        response = self.client().get_object(Bucket=self.bucket, Key=key)
        return bytes(response["Body"].read())

    def stop(self) -> None:
        """Take the server down (SIGTERM, then SIGKILL); its data stays. Idempotent."""
        self._server.stop()

    def start(self) -> None:
        """Bring the server back on the same port with the same data and wait until it is ready."""
        self._server.start()


def _install() -> Path:
    # versions.sh is the one place that names MinIO's version and where its build is cached.
    script = f"source {shlex.quote(str(CLUSTER_SCRIPTS / 'versions.sh'))} && echo $MINIO_BIN"
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True)
    binary = Path(out.stdout.strip()) / "minio"
    if not binary.exists():
        # A few minutes from scratch, longer if a cluster build holds the build lock.
        subprocess.run(
            [str(CLUSTER_SCRIPTS / "build-binaries.sh"), "minio"], check=True, timeout=1800
        )
    return binary


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_object_store(host: str) -> Iterator[ObjectStore]:
    """A MinIO server on `host`:<free port> with one empty bucket and fresh root credentials."""
    binary = _install()
    root = Path(tempfile.mkdtemp(prefix="kubedbt-objectstore-"))
    port = _free_port(host)
    access_key, secret_key = f"kubedbt-{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    # Credentials go in the environment, never on a command line that ps shows.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
        "MINIO_ROOT_USER": access_key,
        "MINIO_ROOT_PASSWORD": secret_key,
        "MINIO_BROWSER": "off",  # no console, so no second port
        "MINIO_UPDATE": "off",  # no update checks against the internet
    }
    server = _Server(binary, root, host=host, port=port, env=env)
    store = ObjectStore(host, port, BUCKET, access_key, secret_key, server)
    try:
        store.start()
        store.client().create_bucket(Bucket=BUCKET)
        yield store
    finally:
        store.stop()
        shutil.rmtree(root, ignore_errors=True)
