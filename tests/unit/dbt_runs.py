"""Real dbt runs of the example project, made once per test session.

Tests of the uploader, the decoder and the classifier read what dbt really wrote, never
hand-written JSON. dbt comes from .venv-dbt (`make dbt-venv`, pinned like the dbt image).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).parents[2]
PROJECT = REPO / "examples" / "jaffle_shop"
DBT = Path(os.environ.get("KUBEDBT_DBT", REPO / ".venv-dbt" / "bin" / "dbt"))


@dataclass(frozen=True)
class DbtRun:
    """One invocation: its exit code and where it wrote its artifacts."""

    name: str
    exit_code: int
    target_path: Path
    log_file: Path
    stdout: str


def run_dbt(workdir: Path, name: str, *args: str) -> DbtRun:
    """Run dbt on a copy of the example project, as kubedbt's pod would (same flags)."""
    base = workdir / name
    project = base / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(base),
        "DBT_DUCKDB_PATH": str(base / "warehouse.duckdb"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
    }
    target, logs = base / "target", base / "logs"
    command = [
        str(DBT),
        *args,
        "--project-dir", str(project),
        "--profiles-dir", str(project / "profiles"),
        "--target-path", str(target),
        "--log-path", str(logs),
        "--log-format-file", "json",
    ]  # fmt: skip
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    return DbtRun(name, completed.returncode, target, logs / "dbt.log", completed.stdout)
