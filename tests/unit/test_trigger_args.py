"""DbtJobTrigger's arguments survive the trip through serialize() to the triggerer."""

from __future__ import annotations

import importlib
import json

from kubedbt.airflow.trigger import ConnectionArgs, DbtJobTrigger, TriggerArgs
from kubedbt.io.retry import RetryPolicy
from kubedbt.io.watch import RunRef, WatchLimits


def test_serialize_round_trip() -> None:
    args = TriggerArgs(
        run=RunRef(
            job_name="dbt-daily-abc-t2",
            namespace="analytics",
            configmap_name="dbt-daily-abc-t2-results",
            selector={
                "app.kubernetes.io/name": "kubedbt",
                "app.kubernetes.io/instance": "dbt-daily-abc-t2",
            },
        ),
        limits=WatchLimits(
            startup_timeout=300.0,
            execution_timeout=3_590.0,
            results_timeout=45.0,
            log_tail_lines=20,
        ),
        memory_limit="2Gi",
        connection=ConnectionArgs(
            "k8s_prod", cluster_context="prod", config_file=None, in_cluster=False
        ),
        retry=RetryPolicy(attempts=3, backoff_min=1.0, backoff_max=8.0, deadline=60.0),
    )
    trigger = DbtJobTrigger(**args.to_kwargs())
    classpath, kwargs = trigger.serialize()
    # What the triggerer stores is JSON; rebuild the trigger from it the way the triggerer does.
    module_name, _, class_name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module_name), class_name)(
        **json.loads(json.dumps(kwargs))
    )
    assert rebuilt.args == args
    assert rebuilt.serialize() == (classpath, kwargs)


def test_defaults_round_trip() -> None:
    args = TriggerArgs(RunRef("j", "ns", "j-results", {"a": "b"}), WatchLimits(startup_timeout=1.0))
    assert TriggerArgs.from_kwargs(args.to_kwargs()) == args


def test_a_trigger_serialised_by_an_older_kubedbt_still_rebuilds() -> None:
    # An older kubedbt handed over an absolute execution_deadline; the deadline now counts
    # from the Job's creation, and the old key is dropped rather than failing the triggerer.
    kwargs = TriggerArgs(RunRef("j", "ns", "j-results", {"a": "b"}), WatchLimits(1.0)).to_kwargs()
    kwargs["limits"]["execution_deadline"] = 1_790_003_600.0
    assert TriggerArgs.from_kwargs(kwargs).limits == WatchLimits(startup_timeout=1.0)
