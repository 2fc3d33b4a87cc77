"""Options shared by every test folder."""

from __future__ import annotations

import os
import tempfile

import pytest

# Tests that import Airflow in this process must not write to ~/airflow; DAG runs in subprocesses
# get their own AIRFLOW_HOME (tests/e2e/conftest.py).
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="kubedbt-airflow-"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the golden manifests under tests/unit/golden from the current renderer",
    )
