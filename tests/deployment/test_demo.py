"""`make demo`'s last step, on the real Airflow deployment: what it prints must work.

examples/demo/run.sh installs the chart in kubedbt-demo and runs the two example DAGs (one good
run, one failing on purpose). Every kubectl command it prints is then run as printed, and each
must show its run: this is what a new user pastes first.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from tests.airflow.client import AirflowClient

pytestmark = pytest.mark.cluster

REPO = Path(__file__).parents[2]
FAILED_TEST = "test.jaffle_shop.assert_order_amount_matches_payments"


def _printed_env(output: str) -> dict[str, str]:
    """The environment of the printed `export PATH=... KUBECONFIG=...` line."""
    line = next(line for line in output.splitlines() if line.strip().startswith("export "))
    env = dict(os.environ)
    for word in shlex.split(line.strip())[1:]:
        name, _, value = word.partition("=")
        env[name] = value.replace("$PATH", os.environ["PATH"])
    return env


def test_demo_prints_commands_that_show_a_good_and_a_failed_run(airflow: AirflowClient) -> None:
    demo = subprocess.run(
        [str(REPO / "examples" / "demo" / "run.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr[-4000:]
    out = demo.stdout
    jobs = re.findall(r"^Job: kubedbt-demo/(\S+)", out, re.MULTILINE)
    assert len(jobs) == 2, out
    good, failed = jobs
    assert "dbt build finished" in out, out
    assert "28 nodes (20 pass, 8 success)" in out, out
    assert "Outcome: tests_failed (retryable: no)" in out, out
    assert FAILED_TEST in out, out

    env = _printed_env(out)
    commands = [line.strip() for line in out.splitlines() if line.strip().startswith("kubectl ")]
    assert len(commands) == 6, commands
    shown: dict[str, str] = {}
    for command in commands:
        ran = subprocess.run(
            shlex.split(command), env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert ran.returncode == 0, f"{command}: {ran.stderr}"
        assert ran.stdout.strip(), f"{command} printed nothing"
        shown[command] = ran.stdout

    runs = shown["kubectl dbt -n kubedbt-demo runs"]
    assert re.search(rf"^{good}\s.*\sSucceeded\s", runs, re.MULTILINE), runs
    assert re.search(rf"^{failed}\s.*\sFailed\s", runs, re.MULTILINE), runs
    described = shown[f"kubectl dbt -n kubedbt-demo describe {failed}"]
    assert "Kind:       tests_failed" in described, described
    assert FAILED_TEST in shown[f"kubectl dbt -n kubedbt-demo results {failed}"]
    assert "28 nodes (20 pass, 8 success)" in shown[f"kubectl dbt -n kubedbt-demo results {good}"]
    assert "Done. PASS=28" in shown[f"kubectl dbt -n kubedbt-demo logs {good} --tail 20"]
