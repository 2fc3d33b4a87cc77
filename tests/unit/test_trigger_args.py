"""DbtJobTrigger's arguments survive the trip through serialize() to the triggerer."""

from __future__ import annotations

import importlib
import json

from kubedbt.airflow.trigger import ConnectionArgs, DbtJobTrigger, ProgressLog, TriggerArgs
from kubedbt.core.live import RunningNode, Snapshot
from kubedbt.core.render import ANNOTATION_COMMAND
from kubedbt.io.retry import RetryPolicy
from kubedbt.io.watch import RunRef, WatchLimits, command_name


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


class _Lines:
    """Collects what the trigger logs, as the task log would show it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, /, *args: object) -> None:
        self.lines.append(msg % args)


def test_progress_lines_are_bounded_and_readable() -> None:
    now = [1000.0]
    written = _Lines()
    progress = ProgressLog(written, clock=lambda: now[0])
    customers = RunningNode("model.jaffle_shop.customers", 1000.0)
    for second in range(120):  # a change every second for two minutes
        now[0] = 1000.0 + second
        done = {"success": second // 10 + 1, "error": 1}
        progress.update(
            Snapshot(done=done, total=28, running=(customers,), running_count=1), "dbt build"
        )
    assert len(written.lines) == 4  # at 0, 30, 60 and 90 s
    assert written.lines[1] == (
        "dbt build: 5 of 28 nodes done (4 success, 1 error), "
        "running model.jaffle_shop.customers for 30s"
    )
    now[0] = 1000.0 + 125
    progress.tick()  # the change held back since 90 s is written at the next tick
    assert written.lines[-1].startswith("dbt build: 13 of 28 nodes done (12 success, 1 error)")
    now[0] = 1000.0 + 125 + 299
    progress.tick()
    assert len(written.lines) == 5  # unchanged: nothing until the heartbeat
    now[0] = 1000.0 + 125 + 300
    progress.tick()
    assert written.lines[-1].endswith("running model.jaffle_shop.customers for 7m05s")


def test_the_command_is_named_without_its_options() -> None:
    def job(command: object) -> dict[str, object]:
        return {"metadata": {"annotations": {ANNOTATION_COMMAND: command}}}

    assert command_name(job("dbt build --vars '{password: secret}' -s customers")) == "dbt build"
    assert command_name(job("dbt source freshness --select x")) == "dbt source freshness"
    assert command_name(job("dbt 'unclosed")) == "dbt"
    assert command_name(None) == "dbt"
