"""Reading a run's results: the public face of kubedbt.core.results.

from kubedbt.results import decode
outcome = decode(configmap_dict)   # RunResults(status, summary, run_results, sources, ...)
"""

from kubedbt.core.packing import pack
from kubedbt.core.results import (
    LogEvent,
    NodeFailure,
    RunResults,
    SourceFreshness,
    Summary,
    UploadStatus,
    decode,
    digest_log,
    summarize,
)

__all__ = [
    "LogEvent",
    "NodeFailure",
    "RunResults",
    "SourceFreshness",
    "Summary",
    "UploadStatus",
    "decode",
    "digest_log",
    "pack",
    "summarize",
]
