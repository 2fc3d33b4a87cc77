"""Real dbt runs of the example project, made once per test session.

Tests of the uploader, the decoder and the classifier read what dbt really wrote, never
hand-written JSON. dbt comes from .venv-dbt (`make dbt-venv`, pinned like the dbt image).
"""

from __future__ import annotations

import dataclasses
import json
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


def copy_example(base: Path) -> Path:
    """A copy of the example project under base, as the pod's image holds it."""
    project = base / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    return project


def invoke(project: Path, base: Path, *args: str, timeout: float = 300) -> DbtRun:
    """Run dbt on a project as kubedbt's pod would (same flags); its warehouse, target and logs
    are under base, so invocations with the same base share them as the steps of one pod do."""
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
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return DbtRun(args[0], completed.returncode, target, logs / "dbt.log", completed.stdout)


def run_dbt(workdir: Path, name: str, *args: str) -> DbtRun:
    """Run dbt on a fresh copy of the example project."""
    base = workdir / name
    return dataclasses.replace(invoke(copy_example(base), base, *args), name=name)


# Loads artifacts the way `dbt retry --state` does (read_and_check_versions), and checks them
# against the JSON schema dbt generates from the same classes, in dbt's own environment.
_LOAD_SCRIPT = """
import json, sys
import jsonschema
from dbt.artifacts.schemas.freshness import FreshnessExecutionResultArtifact
from dbt.artifacts.schemas.run import RunResultsArtifact

counts = []
for path in sys.argv[1:]:
    schema = json.load(open(path))["metadata"]["dbt_schema_version"]
    cls = FreshnessExecutionResultArtifact if "/sources/" in schema else RunResultsArtifact
    jsonschema.validate(json.load(open(path)), cls.json_schema())
    counts.append(len(cls.read_and_check_versions(path).results))
print(json.dumps(counts))
"""


def load_with_dbt(*paths: Path) -> list[int]:
    """How many results dbt's own loader reads from each artifact; fails with dbt's error."""
    return run_in_dbt_python(_LOAD_SCRIPT, *paths)


def run_in_dbt_python(script: str, *paths: Path) -> list[int]:
    """The JSON list `script` prints, run by dbt's Python with `paths` as its arguments."""
    python = DBT.parent / "python"
    assert python.exists(), f"no dbt at {DBT}: run `make dbt-venv` (make test-unit does)"
    completed = subprocess.run(
        [str(python), "-c", script, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    counts: list[int] = json.loads(completed.stdout)
    return counts
