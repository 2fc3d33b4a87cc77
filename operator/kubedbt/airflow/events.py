"""The one event a run's watch produces, shared by the trigger and the operator's sync mode."""

from __future__ import annotations

from typing import Literal, TypedDict

from kubedbt.core.classify import Outcome, OutcomeKind
from kubedbt.core.results import Summary
from kubedbt.io.watch import WatchResult


class RunEvent(TypedDict):
    """What the worker gets back when a run ends."""

    status: Literal["success", "failed", "error"]
    job_name: str
    namespace: str
    kind: OutcomeKind | None
    retryable: bool
    reason: str
    exit_code: int | None
    evidence: list[str]
    summary: Summary | None
    upload_status: str | None
    log_tail: str | None
    pod_name: str | None


def run_event(job_name: str, namespace: str, outcome: Outcome, result: WatchResult) -> RunEvent:
    """The event of a run that was watched to its end (or to a deadline)."""
    results = result.evidence.results
    return {
        "status": "success" if outcome.succeeded else "failed",
        "job_name": job_name,
        "namespace": namespace,
        "kind": outcome.kind,
        "retryable": outcome.retryable,
        "reason": outcome.reason,
        "exit_code": outcome.exit_code,
        "evidence": list(outcome.evidence),
        "summary": results.summary if results else None,
        "upload_status": results.status if results else None,
        "log_tail": result.log_tail,
        "pod_name": result.pod_name,
    }


def error_event(job_name: str, namespace: str, message: str) -> RunEvent:
    """The event of a watch that could not finish (the API stayed unreachable).

    `message` reaches the task log and XCom: describe the error with
    kubedbt.io.api_errors.describe, which never repeats a response body or submitted values.
    """
    return {
        "status": "error",
        "job_name": job_name,
        "namespace": namespace,
        "kind": None,
        "retryable": True,
        "reason": f"watching the run failed: {message}",
        "exit_code": None,
        "evidence": [],
        "summary": None,
        "upload_status": None,
        "log_tail": None,
        "pod_name": None,
    }
