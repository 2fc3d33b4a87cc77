"""A real PostgreSQL warehouse for the tests, reachable from the cluster's pods.

It is a throwaway server of Debian's postgresql-15 (installed the way the Airflow deployment
installs it, tests/airflow/airflow.sh), with its data in a temporary directory, listening on the
node's address so dbt in a pod connects to it as it would to a real warehouse, with a password.
The tests look at it from outside, as a DBA would: pg_stat_activity says which statements are
running, so a query left behind by a killed dbt shows.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

REPO = Path(__file__).parents[1]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PORT = 5439


@dataclass(frozen=True)
class Warehouse:
    """Where dbt finds the warehouse, and a superuser's view of it."""

    host: str
    port: int
    user: str
    password: str
    database: str
    admin_socket: str

    def env(self, schema: str) -> dict[str, str]:
        """The env vars the example project's postgres target reads."""
        return {
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_DB": self.database,
            "POSTGRES_SCHEMA": schema,
        }

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run `sql` as the superuser over the local socket; its rows."""
        with (
            psycopg2.connect(
                host=self.admin_socket, port=self.port, user="postgres", dbname=self.database
            ) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, args)
            return list(cursor.fetchall()) if cursor.description else []

    def running(self, like: str) -> list[str]:
        """The statements of dbt's user running now whose text contains `like`."""
        rows = self.query(
            "select query from pg_stat_activity where usename = %s and state <> 'idle' "
            "and query like %s",
            self.user,
            f"%{like}%",
        )
        return [str(row[0]) for row in rows]


def _install() -> None:
    if (PG_BIN / "postgres").exists():
        return
    script = f"source {REPO}/tests/airflow/airflow.sh && install_postgres"
    subprocess.run(["bash", "-c", script], check=True, timeout=900)


def _as_postgres(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv],
        check=True, capture_output=True, text=True, cwd="/", timeout=120, **kwargs,
    )  # fmt: skip


@contextmanager
def running_warehouse(host: str) -> Iterator[Warehouse]:
    """A PostgreSQL server on `host`:PORT with a `dbt` user and a `warehouse` database."""
    _install()
    root = Path(tempfile.mkdtemp(prefix="kubedbt-warehouse-"))
    shutil.chown(root, "postgres", "postgres")
    root.chmod(0o755)
    data, socket = root / "data", root / "socket"
    socket.mkdir()
    shutil.chown(socket, "postgres", "postgres")
    password = secrets.token_urlsafe(16)
    _as_postgres(
        str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
        "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
    )  # fmt: skip
    # Pods connect from the cluster's pod network with a password, as to any warehouse.
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
    _as_postgres(
        str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-w",
        "-o", f"-p {PORT} -k {socket} -c listen_addresses={host}", "start",
    )  # fmt: skip
    warehouse = Warehouse(host, PORT, "dbt", password, "warehouse", str(socket))
    try:
        _as_postgres(
            str(PG_BIN / "psql"), "-h", str(socket), "-p", str(PORT), "-U", "postgres", "-q",
            "-c", f"create role dbt login password '{password}'",
            "-c", "create database warehouse owner dbt",
        )  # fmt: skip
        yield warehouse
    finally:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def wait_until(predicate: Any, timeout: float, interval: float = 0.2) -> float | None:
    """Seconds until `predicate()` held, or None if it did not within `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    return None
