"""The one event a run's watch produces, shared by the trigger and the operator's sync mode."""

from __future__ import annotations

import logging
from typing import Literal, TypedDict

from typing_extensions import NotRequired

from kubedbt.core.classify import RETRYABLE, OutcomeKind
from kubedbt.core.metrics import RunTimings, run_timings
from kubedbt.core.report import warnings_reason
from kubedbt.core.results import Summary
from kubedbt.io.watch import WatchResult

log = logging.getLogger(__name__)


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
    # From the Job's and pod's timestamps; absent from an older triggerer's events.
    timings: NotRequired[RunTimings | None]
    # What to change when the failure is a misconfiguration kubedbt recognises
    # (kubedbt.core.diagnose); absent from an older triggerer's events.
    fix: NotRequired[str | None]


def run_event(job_name: str, namespace: str, result: WatchResult) -> RunEvent:
    """The event of a run that was watched to its end (or to a deadline)."""
    outcome, results = result.outcome, result.evidence.results
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
        "timings": _timings(result),
        "fix": outcome.fix,
    }


def _timings(result: WatchResult) -> RunTimings | None:
    """The run's timings for the metrics; None rather than an error that would cost the run."""
    try:
        return run_timings(result.evidence.job, result.evidence.pods)
    except Exception:
        log.exception("no timings for the metrics of this run")
        return None


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
        "timings": None,
        "fix": None,
    }


def apply_warning_policy(run: RunEvent, on_warning: str) -> RunEvent:
    """The run as the operator reports it: with on_warning "fail", warned nodes fail a success.

    The failure is of kind "warnings" (terminal unless retryable_failures says otherwise); its
    reason names the nodes, and the summary still lists them with their messages.
    """
    summary = run["summary"]
    if on_warning != "fail" or run["status"] != "success" or summary is None:
        return run
    reason = warnings_reason(summary)
    if reason is None:
        return run
    return {
        **run,
        "status": "failed",
        "kind": "warnings",
        "retryable": RETRYABLE["warnings"],
        "reason": f"{reason}, and on_warning is 'fail'",
    }
