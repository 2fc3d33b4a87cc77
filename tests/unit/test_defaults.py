"""Namespace defaults fill in what a DAG leaves unset, and nothing else."""

from __future__ import annotations

import pytest

from kubedbt import InvalidSpecError
from kubedbt.core.defaults import apply_defaults, parse_defaults


def _configmap(text: str) -> dict[str, object]:
    return {"metadata": {"name": "kubedbt-defaults"}, "data": {"defaults.yaml": text}}


def test_defaults_fill_only_unset_parameters() -> None:
    defaults = parse_defaults(
        _configmap("image: corp/dbt:1.2\nnode_selector: {pool: batch}\nservice_account_name: dbt\n")
    )
    values = {"command": "build", "image": "mine/dbt:3", "namespace": "analytics"}
    merged = apply_defaults(values, defaults, explicit={"command", "image", "namespace"})
    assert merged["image"] == "mine/dbt:3", "the DAG wins"
    assert merged["node_selector"] == {"pool": "batch"}
    assert merged["service_account_name"] == "dbt"


def test_no_configmap_means_no_defaults() -> None:
    assert parse_defaults(None) == {}
    assert parse_defaults({"data": {}}) == {}
    assert parse_defaults(_configmap("")) == {}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("select: tag:daily\n", "unknown keys ['select']"),
        ("- image\n", "must be a mapping"),
        ("image: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_defaults_name_the_configmap(text: str, words: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_defaults(_configmap(text))
    assert "kubedbt-defaults" in caught.value.parameter
    assert words in str(caught.value)
