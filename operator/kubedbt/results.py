"""Reading a run's results: the public face of kubedbt.core.results.

from kubedbt.results import decode
outcome = decode(configmap_dict)   # RunResults(status, summary, run_results, log_events)
"""

from kubedbt.core.results import (
    LogEvent,
    NodeFailure,
    RunResults,
    Summary,
    UploadStatus,
    decode,
    digest_log,
    pack,
    summarize,
)

__all__ = [
    "LogEvent",
    "NodeFailure",
    "RunResults",
    "Summary",
    "UploadStatus",
    "decode",
    "digest_log",
    "pack",
    "summarize",
]
