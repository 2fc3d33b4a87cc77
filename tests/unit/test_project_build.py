"""`make project-image` stops before building on bad input and on findings, saying why.

These run the real target and script, up to the point where docker would start: no image is
built (tests/e2e/test_own_project.py builds and runs them on the cluster).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


DUCKDB_NEXT_TO_IT = (
    "my_shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
    "      path: shop.duckdb\n      password: s3cr3t-value\n"
)


def _make(project: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    settings = [f"{name}={value}" for name, value in variables.items()]
    return subprocess.run(
        ["make", "--no-print-directory", "project-image", f"PROJECT={project}", "IMAGE=a:b",
         *settings],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HOME": str(project.parent)},
    )  # fmt: skip


@pytest.mark.parametrize("no", ["0", "false", "no", "off", ""])
def test_a_flag_set_to_no_is_off(tmp_path: Path, no: str) -> None:
    project = _project(tmp_path / "shop", DUCKDB_NEXT_TO_IT)
    done = _make(project, IGNORE_CHECKS=no, KEEP_DBT_PACKAGES=no)
    assert done.returncode != 0, done.stderr
    assert "1 finding(s) above" in done.stderr, "IGNORE_CHECKS would have gone on"


@pytest.mark.parametrize("variable", ["IGNORE_CHECKS", "KEEP_DBT_PACKAGES"])
def test_a_flag_neither_yes_nor_no_is_named(tmp_path: Path, variable: str) -> None:
    project = _project(tmp_path / "shop", DUCKDB_NEXT_TO_IT)
    done = _make(project, **{variable: "maybe"})
    assert done.returncode != 0  # make says 2 whatever the script's status
    assert f"ERROR {variable}: 'maybe' is neither yes" in done.stderr


def test_the_flags_are_read_as_yes_or_no() -> None:
    build = _module()
    args = build._arguments(["--project", "p", "--image", "a:b", "--keep-dbt-packages", "0"])
    assert (args.ignore_checks, args.keep_dbt_packages) == ("", "0")
    args = build._arguments(["--project", "p", "--image", "a:b", "--ignore-checks"])
    assert args.ignore_checks == "1", "the bare option still means yes"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BASE", "kubedbt/dbt:dev\nimport os"),
        ("BASE", "kubedbt/dbt:dev # comment"),
        ("SIDECAR_IMAGE", "kubedbt/sidecar:dev\nimport os"),
        ("SIDECAR_IMAGE", 'kubedbt/sidecar:dev"'),
        ("NAMESPACE", 'demo"\nimport os'),
    ],
)
def test_what_the_dag_would_carry_is_checked_first(
    tmp_path: Path, variable: str, value: str
) -> None:
    project = _project(tmp_path / "shop", DUCKDB_NEXT_TO_IT)
    done = _make(project, **{variable: value})
    assert done.returncode != 0
    assert f"ERROR {variable}: " in done.stderr
    assert "FINDING" not in done.stderr, "stopped before the project was even checked"


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    project = _project(tmp_path / "shop", None)
    (project / "dbt_project.yml").write_bytes(b"name: caf\xe9\n")
    done = _build("--project", str(project), "--image", "shop:dev", cwd=tmp_path)
    assert done.returncode == 2
    assert f"ERROR {project / 'dbt_project.yml'}: is not UTF-8 text (byte 9)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("link", "target", "says"),
    [
        ("models/loop", "..", "a directory it is in"),
        ("models/self", ".", "a directory it is in"),
        ("models/cycle", "cycle", "broken or looping symbolic link"),
        ("models/gone.sql", "missing.sql", "broken or looping symbolic link"),
    ],
)
def test_a_link_the_copy_cannot_follow_is_named(
    tmp_path: Path, link: str, target: str, says: str
) -> None:
    project = _project(tmp_path / "shop", None)
    (project / "models").mkdir()
    (project / link).symlink_to(target)
    done = _build("--project", str(project), "--image", "shop:dev", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"ERROR {project / link}: " in done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_a_link_inside_the_project_is_fine(tmp_path: Path) -> None:
    build = _module()
    project = _project(tmp_path / "shop", None)
    (project / "shared").mkdir()
    (project / "models").mkdir()
    (project / "models" / "shared").symlink_to("../shared")
    build.check_links(project, set())


def test_a_file_the_copy_cannot_read_is_named(tmp_path: Path) -> None:
    build = _module()
    project = _project(tmp_path / "shop", None)
    os.mkfifo(project / "pipe")  # copied as a file, it would never end: shutil refuses it
    context = tmp_path / "context"
    context.mkdir()
    read = build.Project(name="my_shop", profile="my_shop", packages_install_path="dbt_packages")
    with pytest.raises(build.BuildError, match=r"cannot copy \S*/shop/pipe: .*named pipe"):
        build._stage(project, context, read, keep_packages=False)


def test_a_literal_password_is_warned_about_not_shown(tmp_path: Path) -> None:
    project = _project(tmp_path / "shop", DUCKDB_NEXT_TO_IT)
    done = _build("--project", str(project), "--image", "shop:dev", cwd=tmp_path)
    assert done.returncode == 1
    assert "WARNING profiles.yml: my_shop.outputs.dev.password is written in the file" in (
        done.stderr
    )
    assert "s3cr3t-value" not in done.stderr


def _module() -> Any:
    """images/project/build.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("project_build", SCRIPT)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
