"""Packing a dbt artifact into its results ConfigMap, within the size limit and bounded memory.

A ConfigMap holds at most 1 MiB, and a large project's run_results are tens of MB of compiled SQL,
more than the sidecar's memory limit allows to hold parsed. So packing streams: results come one
at a time (`Members`), and each is written, reduced to every level at once, to one gzip stream
per level; a level whose output outgrows the budget is abandoned, and the least reduced level that
fits wins. The levels, in order: whole; `compiled_code` null; long messages shortened; `timing`
empty and `adapter_response` empty; the results of successful nodes left out (errored, failed and
skipped ones stay, so `dbt retry` on the next try knows what to rerun); no run_results at all.
Values are nulled or emptied, never deleted, because dbt's loader (`dbt retry --state`) requires
every key of its run-results schema. Each reduction is named in the summary's `dropped` list.

The catalog.json of `dbt docs generate` is packed the same way, beside run_results, within a share
of the budget of its own (pack_catalog): whole, then with each relation's `stats` emptied, then
left out; its counts are in the summary whatever is kept.

What the ConfigMap holds, and how it is read back, is in kubedbt.core.results.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubedbt.core.command_output import CatalogSummary, CatalogTally, Preview
from kubedbt.core.errors import shorten
from kubedbt.core.interruption import Completion
from kubedbt.core.results import (
    CONFIGMAP_LIMIT,
    LOG_DIGEST_KEY,
    METADATA_RESERVE,
    RUN_RESULTS_KEY,
    SHORT_MESSAGE_CHARS,
    SOURCES_KEY,
    SUCCESSFUL_STATUSES,
    SUMMARY_KEY,
    ArtifactKind,
    LogEvent,
    Members,
    Summary,
    Tally,
    UploadStatus,
    artifact_kind,
    compact_json,
    results_of,
)

Reduction = Callable[[dict[str, Any]], dict[str, Any] | None]


def _null_compiled_code(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "compiled_code": None} if result.get("compiled_code") is not None else result


def _shorten_message(result: dict[str, Any]) -> dict[str, Any]:
    message = result.get("message")
    if isinstance(message, str) and len(message) > SHORT_MESSAGE_CHARS:
        return {**result, "message": shorten(message, SHORT_MESSAGE_CHARS)}
    return result


def _empty_timing(result: dict[str, Any]) -> dict[str, Any]:
    # The values dbt itself writes for a node it skipped; keys a result lacks stay absent.
    empty: dict[str, Any] = {"timing": [], "adapter_response": {}}
    return {**result, **{key: value for key, value in empty.items() if key in result}}


def _unless_successful(result: dict[str, Any]) -> dict[str, Any] | None:
    # Skipped nodes stay: `dbt retry` reruns them along with the errored and failed ones.
    return None if result.get("status") in SUCCESSFUL_STATUSES else result


@dataclass(frozen=True)
class _Artifact:
    """One file dbt writes: its ConfigMap key, its reductions in order, its name when left out."""

    key: str
    reductions: tuple[tuple[str, Reduction], ...]
    name: str

    def dropped(self, level: int) -> list[str]:
        """What is given up at a level; past the last reduction, the whole file."""
        names = [name for name, _ in self.reductions[:level]]
        return [*names, self.name] if level > len(self.reductions) else names


_ARTIFACTS: Final = {
    "run_results": _Artifact(
        RUN_RESULTS_KEY,
        (
            ("compiled_code", _null_compiled_code),
            ("long_messages", _shorten_message),
            ("timing", _empty_timing),
            ("successful_results", _unless_successful),
        ),
        "run_results",
    ),
    # What `dbt source freshness` writes instead of run_results (never both in one invocation).
    "sources": _Artifact(
        SOURCES_KEY,
        (("sources:timing", _empty_timing), ("sources:successful_results", _unless_successful)),
        "sources",
    ),
}


class _Levels:
    """gzip streams of one document, one per reduction level; one past `ceiling` is given up."""

    def __init__(self, count: int, ceiling: int) -> None:
        # wbits 31: the gzip container, with mtime 0, so equal input packs to equal bytes.
        self._zips = [zlib.compressobj(9, zlib.DEFLATED, 31) for _ in range(count)]
        self._out: list[bytearray | None] = [bytearray() for _ in range(count)]
        self._ceiling = ceiling

    def alive(self, level: int) -> bool:
        return self._out[level] is not None

    def write(self, level: int, text: str) -> None:
        out = self._out[level]
        if out is not None:
            out += self._zips[level].compress(text.encode())
            if len(out) > self._ceiling:
                self._out[level] = None  # freed at once: memory stays within the ceiling

    def write_all(self, text: str) -> None:
        for level in range(len(self._out)):
            self.write(level, text)

    def finish(self) -> list[bytes | None]:
        for level, out in enumerate(self._out):
            if out is not None:
                out += self._zips[level].flush()
        return [None if o is None or len(o) > self._ceiling else bytes(o) for o in self._out]


@dataclass(frozen=True)
class Reported:
    """What the summary carries beside the artifact's own tally (kubedbt.core.command_output)."""

    catalog: CatalogSummary | None = None
    # What pack_catalog gave up of the catalog, for the summary's `dropped`.
    catalog_dropped: tuple[str, ...] = ()
    previews: tuple[Preview, ...] = ()
    previews_omitted: int = 0
    # What the log's reader left unread (command_output.LogReport.dropped).
    log_dropped: tuple[str, ...] = ()

    def apply(self, summary: Summary) -> Summary:
        """The summary with these added (a new dict: the packer measures each level's)."""
        return {
            **summary,
            "dropped": [*summary["dropped"], *self.catalog_dropped, *self.log_dropped],
            "catalog": self.catalog,
            "previews": list(self.previews),
            "previews_omitted": self.previews_omitted,
        }


# The catalog's levels: whole, each relation's statistics emptied (the values dbt writes for a
# relation without any; every key of the catalog schema stays), then left out.
CATALOG_LEVELS: Final = ("catalog:stats", "catalog")
CATALOG_OBJECTS: Final = frozenset({"nodes", "sources"})


def _without_stats(table: Any) -> Any:
    if isinstance(table, dict) and table.get("stats"):
        return {**table, "stats": {}}
    return table


def pack_catalog(members: Members, ceiling: int) -> tuple[bytes | None, Reported]:
    """catalog.json gzip-compressed within `ceiling` bytes (None past it), and its summary.

    `members` come from json_members(..., objects=CATALOG_OBJECTS), so the catalog's relations
    are read one at a time, like the results of run_results.
    """
    levels = _Levels(len(CATALOG_LEVELS), ceiling)
    tally = CatalogTally()
    separator = "{"
    for key, value in members:
        levels.write_all(f"{separator}{compact_json(key)}:")
        separator = ","
        if key in CATALOG_OBJECTS and isinstance(value, Iterator):
            comma = ""
            levels.write_all("{")
            for unique_id, table in value:
                tally.relation(key, table)
                entry = f"{comma}{compact_json(unique_id)}:"
                levels.write(0, entry + compact_json(table))
                levels.write(1, entry + compact_json(_without_stats(table)))
                comma = ","
            levels.write_all("}")
            continue
        if key == "errors":
            tally.catalog_errors(value)
        levels.write_all(compact_json(value))
    levels.write_all("}" if separator == "," else "{}")
    for level, blob in enumerate(levels.finish()):
        if blob is not None:
            return blob, Reported(tally.summary(), CATALOG_LEVELS[:level])
    return None, Reported(tally.summary(), CATALOG_LEVELS)


def _stream(
    artifact: _Artifact, members: Members, ceiling: int, completion: Completion | None = None
) -> tuple[list[bytes | None], Tally]:
    """Compress a document at every level in one pass over it, and tally its summary."""
    reductions = [reduce for _, reduce in artifact.reductions]
    levels = _Levels(len(reductions) + 1, ceiling)
    tally = Tally(of_sources=artifact.key == SOURCES_KEY)
    if completion is not None:
        members = completion.members(members)
    separator = "{"
    for key, value in members:
        tally.member(key, value)
        levels.write_all(f"{separator}{compact_json(key)}:")
        separator = ","
        if key != "results" or value is None:
            levels.write_all(compact_json(value))
            continue
        levels.write_all("[")
        written = [False] * (len(reductions) + 1)
        for result in results_of(value):
            tally.result(result)
            reduced: dict[str, Any] | None = result
            for level in range(len(written)):
                if level and reduced is not None:
                    reduced = reductions[level - 1](reduced)
                if reduced is not None and levels.alive(level):
                    levels.write(level, ("," if written[level] else "") + compact_json(reduced))
                    written[level] = True
        levels.write_all("]")
    levels.write_all("}" if separator == "," else "{}")
    if completion is not None:
        tally.interruption = completion.summary()
    return levels.finish(), tally


def pack_members(
    members: Members | None,
    log_events: list[LogEvent],
    *,
    kind: ArtifactKind = "run_results",
    limit: int = CONFIGMAP_LIMIT,
    completion: Completion | None = None,
    reported: Reported | None = None,
) -> tuple[dict[str, str], dict[str, str], UploadStatus]:
    """The ConfigMap's (data, binaryData, upload status), within `limit` bytes of payload.

    The artifact (run_results or sources) is read once, as a stream: memory holds one result at a
    time and the compressed levels still within the budget, never the whole file. `completion`
    adds the results of the nodes an interrupted dbt left unfinished (run_results only);
    `reported` what the summary carries beside (its size counts against the limit).
    """
    budget = limit - METADATA_RESERVE
    digest_json = json.dumps(log_events)
    if members is None:
        return {LOG_DIGEST_KEY: digest_json}, {}, "no-results"
    artifact = _ARTIFACTS[kind]
    levels, tally = _stream(
        artifact, members, budget, completion if kind == "run_results" else None
    )
    # Past the last level the artifact is left out: the summary and the digest always fit.
    for level, blob in enumerate([*levels, b""]):
        summary = tally.summary(artifact.dropped(level))
        data = {SUMMARY_KEY: json.dumps(reported.apply(summary) if reported else summary)}
        data[LOG_DIGEST_KEY] = digest_json
        binary = {artifact.key: blob} if blob else {}
        if blob is not None and _size(data, binary) <= budget:
            break
    return data, {key: base64.b64encode(blob).decode() for key, blob in binary.items()}, "uploaded"


def pack_summary(
    summary: Summary, log_events: list[LogEvent]
) -> tuple[dict[str, str], dict[str, str], UploadStatus]:
    """The ConfigMap of a command whose summary comes from its log alone (`dbt debug`).

    Both are bounded far below any limit: the summary by kubedbt.core.command_output's bounds,
    the events by MAX_EVENTS error events plus debug's MAX_CHECKS failed checks.
    """
    data = {SUMMARY_KEY: json.dumps(summary), LOG_DIGEST_KEY: json.dumps(log_events)}
    return data, {}, "uploaded"


def pack(
    document: Mapping[str, Any] | None,
    log_events: list[LogEvent],
    *,
    limit: int = CONFIGMAP_LIMIT,
) -> tuple[dict[str, str], dict[str, str], UploadStatus]:
    """`pack_members` of a run_results or sources document already in memory."""
    if document is None:
        return pack_members(None, log_events, limit=limit)
    return pack_members(document.items(), log_events, kind=artifact_kind(document), limit=limit)


def _size(data: Mapping[str, str], binary: Mapping[str, bytes]) -> int:
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    return size + sum(len(k) + len(v) for k, v in binary.items())
