"""`make project-image` stops before building on bad input and on findings, saying why.

These run the real target and script, up to the point where docker would start: no image is
built (tests/e2e/test_own_project.py builds and runs them on the cluster).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]
SCRIPT = REPO / "images" / "project" / "build.py"


def _build(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
        env={**os.environ, "HOME": str(cwd)},
    )  # fmt: skip


def _project(root: Path, profile: str | None) -> Path:
    root.mkdir()
    (root / "dbt_project.yml").write_text("name: my_shop\nprofile: my_shop\n")
    if profile is not None:
        (root / "profiles.yml").write_text(profile)
    return root


def test_values_never_reach_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = f'x"; touch {marker}; echo "'
    done = subprocess.run(
        ["make", "--no-print-directory", "project-image", f"PROJECT={hostile}", "IMAGE=a:b"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "ERROR PROJECT: " in done.stderr
    assert "is not a directory" in done.stderr
    assert not marker.exists()


def test_bad_image_is_named(tmp_path: Path) -> None:
    project = _project(tmp_path / "shop", None)
    done = _build("--project", str(project), "--image", "Shop", cwd=tmp_path)
    assert done.returncode == 2
    assert "ERROR IMAGE: 'Shop' is not an image name" in done.stderr


def test_not_a_dbt_project(tmp_path: Path) -> None:
    done = _build("--project", str(tmp_path), "--image", "shop:dev", cwd=tmp_path)
    assert done.returncode == 2
    assert "has no dbt_project.yml: it is not a dbt project" in done.stderr


def test_a_local_package_outside_the_project_stops_it(tmp_path: Path) -> None:
    project = _project(tmp_path / "shop", None)
    (project / "packages.yml").write_text("packages:\n  - local: ../shared\n")
    done = _build("--project", str(project), "--image", "shop:dev", cwd=tmp_path)
    assert done.returncode == 2
    assert "ERROR packages.yml: local package '../shared' is outside" in done.stderr


def test_a_database_next_to_the_project_stops_it_with_the_fix(tmp_path: Path) -> None:
    profile = (
        "my_shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        "      path: shop.duckdb\n"
    )
    project = _project(tmp_path / "shop", profile)
    done = _build("--project", str(project), "--image", "shop:dev", cwd=tmp_path)
    assert done.returncode == 1
    assert "FINDING profiles.yml: my_shop.outputs.dev.path: 'shop.duckdb' is relative" in (
        done.stderr
    )
    assert "fix: path: /kubedbt/my_shop.duckdb" in done.stderr
    assert "IGNORE_CHECKS=1" in done.stderr
    assert done.stdout == "", "no DAG for an image that was not built"
