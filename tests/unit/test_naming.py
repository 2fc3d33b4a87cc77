"""Names and labels are always valid, deterministic, and distinct for distinct identities."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from kubedbt.core import naming
from kubedbt.core.naming import RunIdentity

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Airflow ids: dag and task ids are [A-Za-z0-9_.-]+ up to 250 characters, run ids anything.
airflow_ids = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="_.-"),
    min_size=1,
    max_size=250,
)
run_ids = st.text(min_size=1, max_size=300).filter(lambda s: s.strip() != "" and "\0" not in s)
identities = st.builds(
    RunIdentity,
    dag_id=airflow_ids.filter(str.strip),
    task_id=airflow_ids.filter(str.strip),
    run_id=run_ids,
    map_index=st.integers(min_value=-1, max_value=100_000),
    try_number=st.integers(min_value=1, max_value=1000),
)


def _check_label_value(value: str) -> None:
    assert len(value) <= 63
    assert LABEL_VALUE.match(value), value


@given(identities)
@settings(max_examples=300)
def test_names_and_labels_are_always_valid(identity: RunIdentity) -> None:
    job = naming.job_name(identity)
    assert len(job) <= 63 - len("-results")
    assert DNS_LABEL.match(job), job
    configmap = naming.results_configmap_name(identity)
    assert len(configmap) <= 63
    assert DNS_LABEL.match(configmap)
    for value in naming.run_labels(identity).values():
        _check_label_value(value)
    assert naming.job_name(identity) == job, "names must be deterministic"


@given(identities, identities)
@settings(max_examples=300)
def test_distinct_identities_get_distinct_names_and_labels(a: RunIdentity, b: RunIdentity) -> None:
    if a == b:
        return
    assert naming.job_name(a) != naming.job_name(b)
    assert naming.run_labels(a) != naming.run_labels(b)


@given(run_ids, run_ids)
def test_label_values_are_distinct_for_distinct_texts(a: str, b: str) -> None:
    if a != b:
        assert naming.label_value(a) != naming.label_value(b)


def test_ids_that_are_valid_label_values_stay_readable() -> None:
    identity = RunIdentity("daily_marts", "dbt_build", "manual__2026-11-01", try_number=3)
    labels = naming.run_labels(identity)
    assert labels["kubedbt.io/dag-id"] == "daily_marts"
    assert labels["kubedbt.io/run-id"] == "manual__2026-11-01"
    assert labels["kubedbt.io/try-number"] == "3"
    assert naming.job_name(identity).startswith("dbt-daily-marts-dbt-build-")
    assert naming.job_name(identity).endswith("-t3")


def test_each_try_gets_its_own_name() -> None:
    first = RunIdentity("d", "t", "r", try_number=1)
    second = RunIdentity("d", "t", "r", try_number=2)
    assert naming.job_name(first) != naming.job_name(second)
    assert second.previous_try() == first
    assert first.previous_try() is None
    assert first.same_task_instance(second)
    assert not first.same_task_instance(RunIdentity("d", "t", "other"))


def test_long_ids_are_cut_but_stay_distinct() -> None:
    a = RunIdentity("x" * 250, "task", "run")
    b = RunIdentity("x" * 249 + "y", "task", "run")
    assert naming.job_name(a) != naming.job_name(b)
    assert naming.run_labels(a)["kubedbt.io/dag-id"] != naming.run_labels(b)["kubedbt.io/dag-id"]


def test_ids_with_nothing_readable_still_get_a_name() -> None:
    identity = RunIdentity("___", "...", "+++")
    assert DNS_LABEL.match(naming.job_name(identity))
    assert naming.job_name(identity).startswith("dbt-")
