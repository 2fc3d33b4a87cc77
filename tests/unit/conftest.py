"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest

from tests.unit.dbt_runs import DBT, DbtRun, run_dbt


@pytest.fixture(scope="session")
def dbt_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DbtRun]:
    """The example project run once per outcome: success, a model error, a test failure, a
    parse error, and a retry of the model error with the fault switched off."""
    if not DBT.exists():
        pytest.fail(f"no dbt at {DBT}: run `make dbt-venv` (make test-unit does)")
    work = tmp_path_factory.mktemp("dbt")
    return {
        "success": run_dbt(work, "success", "build"),
        "fail_model": run_dbt(work, "fail_model", "build", "--vars", "{fail_model: true}"),
        "fail_test": run_dbt(work, "fail_test", "build", "--vars", "{fail_test: true}"),
        "fail_parse": run_dbt(work, "fail_parse", "build", "--vars", "{fail_parse: true}"),
    }
