"""Packing results under the ConfigMap limit, and reading them back, on what dbt really wrote.

Every packed file must stay one dbt can load: the tests load each reduction level with dbt's own
artifact loader and resume from it with `dbt retry --state`. Sizes come from real dbt on a
generated project of thousands of models (tests/unit/scaled_project.py), since what decides them
is how well real compiled SQL compresses.
"""

from __future__ import annotations

import base64
import copy
import functools
import gzip
import json
import random
import shutil
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubedbt.core import packing, results, unpacking
from kubedbt.core.classify import Outcome
from kubedbt.core.progress import RunProgress, judge
from kubedbt.core.tries import why_not_resume
from kubedbt.io.uploader import UploadTarget, read_and_pack
from tests.unit.dbt_runs import DbtRun, invoke, load_with_dbt
from tests.unit.packed import Level, configmap, pack_every_level, round_trip
from tests.unit.scaled_project import fix_fault, generate, write_run_results
from tests.unit.test_classify import recorded

# Large enough that the run_results are several MB of compiled SQL; `dbt build` of it takes
# about 100s on two cores.
SCALED_MODELS = 2000
RUN_RESULTS_STEPS = ["compiled_code", "long_messages", "timing", "successful_results"]
RETRYABLE = ("error", "fail", "skipped", "runtime error")


def _written(run: DbtRun) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((run.target_path / "run_results.json").read_text())
    return document


# Each level gives up one more step, and the last gives up run_results altogether.
EVERY_LEVEL = [RUN_RESULTS_STEPS[:n] for n in range(len(RUN_RESULTS_STEPS) + 1)] + [
    [*RUN_RESULTS_STEPS, "run_results"]
]


def _keys(document: dict[str, Any]) -> dict[str, list[str]]:
    return {r["unique_id"]: list(r) for r in document["results"]}


def test_small_results_are_kept_whole(dbt_runs: dict[str, DbtRun]) -> None:
    run = dbt_runs["fail_model"]
    decoded = round_trip(run.target_path, run.log_file)
    assert decoded.run_results == _written(run)
    assert decoded.summary is not None
    assert decoded.summary["dropped"] == []


def test_every_level_keeps_every_key_and_loads_in_dbt(
    dbt_runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    run = dbt_runs["fail_model"]
    written = _written(run)
    levels = pack_every_level(run.target_path)
    # In order; a step that saves too little here to force its own level is passed over.
    assert [EVERY_LEVEL.index(level.dropped) for level in levels] == sorted(
        {EVERY_LEVEL.index(level.dropped) for level in levels}
    )
    assert levels[-1].dropped == EVERY_LEVEL[-1]
    files = []
    for n, level in enumerate(levels[:-1]):
        packed = level.decoded.run_results
        assert packed is not None
        kept = _keys(packed)
        # Reductions null or empty values; every key dbt's schema requires is still there.
        assert kept == {uid: keys for uid, keys in _keys(written).items() if uid in kept}
        files.append(tmp_path / f"level_{n}.json")
        files[-1].write_text(json.dumps(packed))
    assert levels[-1].decoded.run_results is None
    unsuccessful = [r for r in written["results"] if r["status"] in RETRYABLE]
    assert load_with_dbt(*files) == [len(written["results"])] * (len(files) - 1) + [
        len(unsuccessful)
    ]


def test_no_run_results_keeps_the_digest() -> None:
    events: list[results.LogEvent] = [
        {"code": "Z002", "name": "MainEncounteredError", "message": "Parsing Error", "node": None}
    ]
    data, binary, status = packing.pack(None, events)
    assert status == "no-results"
    assert binary == {}
    decoded = results.decode(configmap(data, binary, status))
    assert decoded.run_results is None
    assert decoded.summary is None
    assert decoded.log_events == events


def test_summary_counts_failures_and_slowest(dbt_runs: dict[str, DbtRun]) -> None:
    document = _written(dbt_runs["fail_model"])
    summary = results.summarize(document)
    assert summary["counts"] == dict(Counter(r["status"] for r in document["results"]))
    assert [f["unique_id"] for f in summary["failures"]] == [
        r["unique_id"] for r in document["results"] if r["status"] in ("error", "fail")
    ]
    slowest = max(document["results"], key=lambda r: r["execution_time"])
    assert summary["slowest"][0]["unique_id"] == slowest["unique_id"]
    assert summary["invocation_id"] == document["metadata"]["invocation_id"]
    assert summary["command"] == "build"
    assert summary["freshness"] == []


def test_digest_keeps_error_events_only_and_survives_garbage() -> None:
    lines = [
        "not json at all",
        json.dumps(
            {"info": {"level": "info", "code": "Q033", "name": "LogModelResult", "msg": "ok"}}
        ),
        json.dumps(
            {
                "info": {
                    "level": "error",
                    "code": "Q035",
                    "name": "LogModelResult",
                    "msg": "ERROR creating",
                },
                "data": {"node_info": {"unique_id": "model.p.orders"}},
            }
        ),
        json.dumps(
            {
                "info": {
                    "level": "error",
                    "code": "Z002",
                    "name": "MainEncounteredError",
                    "msg": "x" * 5000,
                }
            }
        ),
        json.dumps(["a", "list"]),
    ]
    events = results.digest_log(lines)
    assert [e["code"] for e in events] == ["Q035", "Z002"]
    assert events[0]["node"] == "model.p.orders"
    assert len(events[1]["message"]) < 1100


def test_decode_of_a_pendingconfigmap() -> None:
    decoded = results.decode(
        {"metadata": {"annotations": {results.UPLOAD_STATUS: "pending"}}, "data": None}
    )
    assert decoded.status == "pending"
    assert decoded.run_results is None
    assert decoded.sources is None


def test_decode_treats_an_unknown_status_as_failed() -> None:
    decoded = results.decode({"metadata": {"annotations": {results.UPLOAD_STATUS: "weird"}}})
    assert decoded.status == "failed"
    assert decoded.upload_error == "unknown upload status 'weird'"


def test_packed_run_results_are_plain_gzip(dbt_runs: dict[str, DbtRun]) -> None:
    document = _written(dbt_runs["success"])
    _, binary, _ = packing.pack(document, [])
    packed = base64.b64decode(binary[results.RUN_RESULTS_KEY])
    assert json.loads(gzip.decompress(packed)) == document


# --- damaged or forged ConfigMaps: decode never raises, and reads nothing past its bounds -------

MiB = 1 << 20


def _gzip(text: bytes) -> bytes:
    """One gzip member, as the packer writes it."""
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)
    return stream.compress(text) + stream.flush()


@functools.cache
def _gzip_bomb(unpacked: int) -> bytes:
    """A real gzip bomb: `unpacked` bytes of zeros (about 1 KB of gzip per MB), never held whole."""
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join(stream.compress(zeros) for _ in range(unpacked // MiB)) + stream.flush()


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _incompressible(size: int) -> bytes:
    """gzip of random bytes: a valid member that packs to more than `size`."""
    return _gzip(random.Random(size).randbytes(size))


@pytest.fixture(scope="module")
def packed_fail_model(dbt_runs: dict[str, DbtRun]) -> dict[str, Any]:
    """The fail_model run's results ConfigMap, as the sidecar uploads it."""
    run = dbt_runs["fail_model"]
    return configmap(*read_and_pack(UploadTarget("ns", "cm", run.target_path, run.log_file)))


def _with(original: dict[str, Any], section: str, key: str, value: str) -> dict[str, Any]:
    damaged = copy.deepcopy(original)
    damaged[section][key] = value
    return damaged


RR = results.RUN_RESULTS_KEY
DAMAGED_ARTIFACTS = [
    pytest.param(
        lambda: _b64(_gzip_bomb(200 * MiB)),
        f"{RR} unpacks to more than 128 MiB; refusing to read it",
        id="gzip-bomb-200MiB",
    ),
    pytest.param(
        lambda: _b64(_incompressible(results.CONFIGMAP_LIMIT)),
        f"{RR} is more than 1 MiB packed, more than a ConfigMap holds; refusing to read it",
        id="over-the-configmap-limit",
    ),
    pytest.param(
        lambda: "not base64 at all!",
        f"{RR} is not valid base64 (Only base64 data is allowed)",
        id="invalid-base64",
    ),
    pytest.param(
        lambda: _b64(_gzip(json.dumps({"results": list(range(10_000))}).encode())[:-100]),
        f"{RR} is truncated: its gzip stream ends early",
        id="truncated-gzip",
    ),
    pytest.param(
        lambda: _b64(b"PK\x03\x04 a zip, say"),
        f"{RR} is not a valid gzip stream "
        "(Error -3 while decompressing data: incorrect header check)",
        id="not-gzip",
    ),
    pytest.param(
        lambda: _b64(_gzip(b"{}") + _gzip(b"{}")),
        f"{RR} has data after the end of its gzip stream",
        id="two-gzip-members",
    ),
    pytest.param(
        lambda: _b64(_gzip(b"dbt wrote this, not JSON")),
        f"{RR} is not valid JSON (Expecting value: line 1 column 1 (char 0))",
        id="not-json",
    ),
    pytest.param(
        lambda: _b64(_gzip(b"[" * 100_000 + b"]" * 100_000)),
        f"{RR} is JSON nested too deeply to read",
        id="nested-100000-deep",
    ),
    pytest.param(
        lambda: _b64(_gzip(b'{"results": [' + b"{}," * 4_100_000 + b"{}]}")),
        f"{RR} holds more than 8000000 JSON values (counting its [ {{ , : marks); "
        "refusing to read it",
        id="json-values-bomb",
    ),
    pytest.param(
        lambda: _b64(_gzip(b'[{"status": "error"}]')),
        f"{RR} is not a dbt artifact: it is a list, not an object",
        id="not-an-object",
    ),
    pytest.param(
        lambda: _b64(_gzip(b'{"results": {"model.p.orders": "error"}}')),
        f"{RR} is not a dbt artifact: results is a dict, not a list",
        id="results-not-a-list",
    ),
]


@pytest.mark.parametrize(("blob", "error"), DAMAGED_ARTIFACTS)
def test_a_damaged_artifact_is_left_out_and_named(
    packed_fail_model: dict[str, Any], blob: Callable[[], str], error: str
) -> None:
    intact = results.decode(packed_fail_model)
    assert intact.status == "uploaded"
    damaged = _with(packed_fail_model, "binaryData", RR, blob())
    decoded = results.decode(damaged)
    assert decoded.status == "failed"
    assert decoded.upload_error == error
    assert decoded.run_results is None
    # What did read is kept: the outcome is still classified from the summary.
    assert decoded.summary == intact.summary
    assert decoded.log_events == intact.log_events


@pytest.mark.parametrize(
    ("build", "unpacked"),
    [
        pytest.param(lambda: _gzip_bomb(200 * MiB), 200 * MiB, id="gzip-bomb"),
        pytest.param(
            lambda: _gzip(b'{"results": [' + b"{}," * 4_100_000 + b"{}]}"),
            4_100_000 * 3,
            id="json-values-bomb",
        ),
    ],
)
def test_a_bomb_is_refused_holding_one_chunk(
    packed_fail_model: dict[str, Any], build: Callable[[], bytes], unpacked: int
) -> None:
    damaged = _with(packed_fail_model, "binaryData", RR, _b64(build()))
    tracemalloc.start()
    try:
        decoded = results.decode(damaged)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.status == "failed"
    # The packed blob (base64 and bytes) and a chunk or two: never what it unpacks to, nor its
    # parse (the values bomb would take 800 MiB as Python objects).
    assert peak < 4 * MiB < unpacked, f"decoding a bomb peaked at {peak} bytes"


def test_the_sources_artifact_is_read_within_the_same_bounds() -> None:
    freshness = configmap(*packing.pack(None, []))
    freshness["binaryData"] = {results.SOURCES_KEY: _b64(_gzip_bomb(200 * MiB))}
    decoded = results.decode(freshness)
    assert (decoded.status, decoded.sources) == ("failed", None)
    assert decoded.upload_error == (
        f"{results.SOURCES_KEY} unpacks to more than 128 MiB; refusing to read it"
    )


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


DAMAGED_DATA = [
    pytest.param(
        results.SUMMARY_KEY,
        "{'nodes': 3",
        "summary.json is not valid JSON "
        "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        id="summary-not-json",
    ),
    pytest.param(
        results.SUMMARY_KEY,
        _deep(100_000),
        "summary.json is JSON nested too deeply to read",
        id="summary-nested-100000-deep",
    ),
    pytest.param(
        results.SUMMARY_KEY,
        "[]",
        "summary.json is not a run summary: it is a list, not an object",
        id="summary-a-list",
    ),
    pytest.param(
        results.SUMMARY_KEY,
        json.dumps({"nodes": 3}),
        "summary.json is not a run summary: invocation_id is missing",
        id="summary-missing-keys",
    ),
    pytest.param(
        results.SUMMARY_KEY,
        "x" * (results.CONFIGMAP_LIMIT + 1),
        "summary.json is more than 1 MiB, more than a ConfigMap holds; refusing to read it",
        id="summary-over-the-limit",
    ),
    pytest.param(
        results.LOG_DIGEST_KEY,
        json.dumps({"code": "Z002"}),
        "log_digest.json is not a list of log events: it is an object, not a list",
        id="digest-an-object",
    ),
    pytest.param(
        results.LOG_DIGEST_KEY,
        json.dumps(["Parsing Error"]),
        "log_digest.json is not a list of log events: [0] is a string, not an object",
        id="digest-of-strings",
    ),
    pytest.param(
        results.LOG_DIGEST_KEY,
        json.dumps([{"code": "Z002", "name": "MainEncounteredError", "node": None}]),
        "log_digest.json is not a list of log events: [0].message is missing",
        id="digest-event-without-message",
    ),
    pytest.param(
        results.LOG_DIGEST_KEY,
        _deep(100_000),
        "log_digest.json is JSON nested too deeply to read",
        id="digest-nested-100000-deep",
    ),
]


@pytest.mark.parametrize(("key", "text", "error"), DAMAGED_DATA)
def test_damaged_data_is_left_out_and_named(
    packed_fail_model: dict[str, Any], key: str, text: str, error: str
) -> None:
    intact = results.decode(packed_fail_model)
    decoded = results.decode(_with(packed_fail_model, "data", key, text))
    assert decoded.status == "failed"
    assert decoded.upload_error == error
    assert decoded.run_results == intact.run_results
    if key == results.SUMMARY_KEY:
        assert (decoded.summary, decoded.log_events) == (None, intact.log_events)
    else:
        assert (decoded.summary, decoded.log_events) == (intact.summary, [])


def test_a_wrong_field_deep_in_the_summary_is_named(packed_fail_model: dict[str, Any]) -> None:
    summary = json.loads(packed_fail_model["data"][results.SUMMARY_KEY])
    assert summary["failures"]
    summary["failures"][0]["message"] = None
    decoded = results.decode(
        _with(packed_fail_model, "data", results.SUMMARY_KEY, json.dumps(summary))
    )
    assert decoded.upload_error == (
        "summary.json is not a run summary: failures[0].message is null, not a string"
    )


def test_a_summary_without_freshness_keys_reads_with_their_defaults(
    packed_fail_model: dict[str, Any],
) -> None:
    # As sidecars older than `dbt source freshness` support wrote it.
    summary = json.loads(packed_fail_model["data"][results.SUMMARY_KEY])
    del summary["freshness"], summary["freshness_omitted"]
    decoded = results.decode(
        _with(packed_fail_model, "data", results.SUMMARY_KEY, json.dumps(summary))
    )
    assert (decoded.status, decoded.upload_error) == ("uploaded", None)
    assert decoded.summary == results.decode(packed_fail_model).summary


def test_a_summary_without_warnings_reads_as_none_warned(
    packed_fail_model: dict[str, Any],
) -> None:
    # As sidecars older than on_warning wrote it: the operator must still read it.
    summary = json.loads(packed_fail_model["data"][results.SUMMARY_KEY])
    del summary["warnings"], summary["warnings_omitted"]
    decoded = results.decode(
        _with(packed_fail_model, "data", results.SUMMARY_KEY, json.dumps(summary))
    )
    assert (decoded.status, decoded.upload_error) == ("uploaded", None)
    assert decoded.summary is not None
    assert (decoded.summary["warnings"], decoded.summary["warnings_omitted"]) == ([], 0)


def test_a_summary_older_than_the_command_reports_reads_with_their_defaults(
    packed_fail_model: dict[str, Any],
) -> None:
    # As sidecars older than docs generate, debug and show support wrote it.
    summary = json.loads(packed_fail_model["data"][results.SUMMARY_KEY])
    for key in ("catalog", "debug", "previews", "previews_omitted"):
        del summary[key]
    decoded = results.decode(
        _with(packed_fail_model, "data", results.SUMMARY_KEY, json.dumps(summary))
    )
    assert (decoded.status, decoded.upload_error) == ("uploaded", None)
    assert decoded.summary == results.decode(packed_fail_model).summary
    assert decoded.summary is not None
    assert (decoded.summary["catalog"], decoded.summary["debug"]) == (None, None)
    assert (decoded.summary["previews"], decoded.summary["previews_omitted"]) == ([], 0)


CK = results.CATALOG_KEY


@pytest.mark.parametrize(
    ("blob", "error"),
    [
        (lambda: _b64(_gzip_bomb(200 * MiB)), f"{CK} unpacks to more than 128 MiB"),
        (lambda: "not base64 at all!", f"{CK} is not valid base64"),
        (lambda: _b64(_gzip(b'{"nodes": []}')), f"{CK} is not a dbt catalog: it has no nodes"),
        (lambda: _b64(_gzip(b"[]")), f"{CK} is not a dbt catalog: it has no nodes"),
    ],
)
def test_a_damaged_catalog_costs_only_itself(
    packed_fail_model: dict[str, Any], blob: Callable[[], str], error: str
) -> None:
    intact = results.decode(packed_fail_model)
    damaged = _with(packed_fail_model, "binaryData", CK, blob())
    decoded = results.decode(damaged)
    assert decoded.catalog is None
    assert decoded.upload_error is not None
    assert decoded.upload_error.startswith(error)
    # Like a damaged lineage digest: the run's outcome does not depend on it.
    assert decoded.status == "uploaded"
    assert (decoded.summary, decoded.run_results) == (intact.summary, intact.run_results)
    assert results.decode(damaged, artifacts=False).upload_error is None


def test_the_stored_size_counts_binary_data_decoded_and_never_raises(
    packed_fail_model: dict[str, Any],
) -> None:
    data = packed_fail_model.get("data") or {}
    binary = packed_fail_model.get("binaryData") or {}
    assert results.stored_size(packed_fail_model) == results.payload_size(data, binary)
    damaged = _with(packed_fail_model, "binaryData", RR, "not base64 at all!")
    expected = results.payload_size(data, {k: v for k, v in binary.items() if k != RR})
    assert results.stored_size(damaged) == expected + len(RR) + len("not base64 at all!")
    assert results.stored_size({}) == 0


def test_the_uploaders_error_and_the_readers_are_both_kept(
    packed_fail_model: dict[str, Any],
) -> None:
    damaged = _with(packed_fail_model, "binaryData", RR, "not base64 at all!")
    damaged["metadata"]["annotations"][results.UPLOAD_ERROR] = "the sidecar said so"
    assert results.decode(damaged).upload_error == (
        f"the sidecar said so; {RR} is not valid base64 (Only base64 data is allowed)"
    )


def test_the_watch_can_leave_the_artifacts_unread(packed_fail_model: dict[str, Any]) -> None:
    damaged = _with(packed_fail_model, "binaryData", RR, _b64(_gzip_bomb(200 * MiB)))
    decoded = results.decode(damaged, artifacts=False)
    assert (decoded.status, decoded.upload_error, decoded.run_results) == ("uploaded", None, None)
    assert decoded.summary == results.decode(packed_fail_model).summary


def _judged(stored: dict[str, Any]) -> Outcome | None:
    """The recorded model_error run (dbt exited 1) judged with `stored` as its ConfigMap."""
    data = recorded("model_error")
    progress = RunProgress(startup_timeout=300)
    progress.listed("job", [data["job"]])
    progress.listed("pod", data["pods"])
    progress.listed("configmap", [stored])
    return judge(progress, float(data["recorded_at"]), results=results.decode(stored))


def test_a_damaged_summary_is_classified_results_missing_with_the_reason() -> None:
    intact = recorded("model_error")["configmap"]
    outcome = _judged(intact)
    assert outcome is not None
    assert outcome.kind == "nodes_errored"
    damaged = _with(intact, "data", results.SUMMARY_KEY, _deep(100_000))
    outcome = _judged(damaged)
    assert outcome is not None
    assert outcome.kind == "results_missing"
    assert outcome.reason == (
        "dbt exited 1 but its results were not uploaded: "
        "summary.json is JSON nested too deeply to read"
    )


def test_damaged_run_results_are_not_resumed_from_and_keep_the_outcome() -> None:
    intact = recorded("model_error")["configmap"]
    assert why_not_resume(results.decode(intact).run_results) is None
    damaged = _with(intact, "binaryData", RR, _b64(_gzip_bomb(200 * MiB)))
    # The full command runs instead of dbt retry; the outcome still comes from the summary.
    assert why_not_resume(results.decode(damaged).run_results) == "it left no run_results"
    outcome = _judged(damaged)
    assert outcome is not None
    assert outcome.kind == "nodes_errored"


# --- run_results of a project of thousands of models -------------------------------------------


@dataclass(frozen=True)
class ScaledBuild:
    """One `dbt build` of the generated project, with some models failing in the database."""

    project: Path
    base: Path
    saved: Path  # a copy of its run_results.json, which later invocations overwrite
    document: dict[str, Any]
    seconds: float


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> ScaledBuild:
    base = tmp_path_factory.mktemp("scaled")
    started = time.monotonic()
    project = generate(base / "project", models=SCALED_MODELS, fail_every=40)
    # One thread: on two cores more threads only contend for the GIL and run slower.
    build = invoke(project, base, "build", "--threads", "1", timeout=600)
    seconds = time.monotonic() - started
    assert build.exit_code == 1, build.stdout[-3000:]
    saved = base / "build"
    saved.mkdir()
    shutil.copy(build.target_path / "run_results.json", saved / "run_results.json")
    document = json.loads((saved / "run_results.json").read_text())
    return ScaledBuild(project, base, saved, document, seconds)


@pytest.fixture(scope="module")
def scaled_levels(scaled: ScaledBuild) -> list[Level]:
    return pack_every_level(scaled.saved)


def test_a_large_projects_real_run_results_fit(scaled: ScaledBuild) -> None:
    written = scaled.document
    statuses = Counter(r["status"] for r in written["results"])
    assert statuses["error"] > 0
    assert statuses["skipped"] > 0
    raw = (scaled.saved / "run_results.json").stat().st_size
    target = UploadTarget("ns", "cm", scaled.saved, scaled.saved / "no.log")
    data, binary, status = read_and_pack(target)
    size = results.payload_size(data, binary)
    assert size <= results.CONFIGMAP_LIMIT - results.METADATA_RESERVE
    decoded = results.decode(configmap(data, binary, status))
    assert decoded.summary is not None
    assert decoded.summary["nodes"] == len(written["results"])
    assert decoded.summary["counts"] == dict(sorted(statuses.items()))
    assert decoded.run_results is not None
    if not decoded.summary["dropped"]:
        assert decoded.run_results == written
    print(
        f"\n{len(written['results'])} nodes built in {scaled.seconds:.0f}s: {raw} bytes of "
        f"run_results -> {size} bytes packed, dropped {decoded.summary['dropped']}"
    )


def test_levels_of_a_large_project_in_order(scaled_levels: list[Level]) -> None:
    assert [level.dropped for level in scaled_levels] == EVERY_LEVEL
    # Whatever is given up, the summary still accounts for every node.
    first = scaled_levels[0].decoded.summary
    assert first is not None
    for level in scaled_levels:
        assert level.decoded.summary == {**first, "dropped": level.dropped}
        print(f"\npayload {level.size:>8} bytes, dropped {level.dropped}")


def test_a_large_projects_artifact_decodes_well_within_the_caps(scaled: ScaledBuild) -> None:
    target = UploadTarget("ns", "cm", scaled.saved, scaled.saved / "no.log")
    data, binary, status = read_and_pack(target)
    decoded = results.decode(configmap(data, binary, status))
    assert (decoded.status, decoded.upload_error) == ("uploaded", None)
    assert decoded.run_results is not None
    packed = base64.b64decode(binary[RR])
    unpacked = gzip.decompress(packed)
    marks = unpacking.count_marks(unpacked)
    # The caps' comments give these figures; a packer that kept much more would need new caps.
    assert len(unpacked) * 8 < unpacking.MAX_UNPACKED_BYTES
    assert marks * 8 < unpacking.MAX_JSON_VALUES
    print(
        f"\n{decoded.summary and decoded.summary['nodes']} nodes: {len(packed)} bytes packed "
        f"unpack to {len(unpacked)} ({len(unpacked) / len(packed):.1f}x), {marks} JSON marks"
    )


def _skipped_nodes(count: int) -> Iterator[dict[str, Any]]:
    """The results of a build whose root failed: every node skipped, as dbt writes them."""
    for index in range(count):
        name = f"l{1 + index % 6}_m{index:06d}"
        yield {
            "status": "skipped",
            "timing": [],
            "thread_id": f"Thread-{1 + index % 4} (worker)",
            "execution_time": 0,
            "adapter_response": {},
            "message": None,
            "failures": None,
            "unique_id": f"model.scaled.{name}",
            "compiled": False,
            "compiled_code": None,
            "relation_name": f'"warehouse"."main"."{name}"',
            "batch_results": None,
        }


def test_the_most_compressible_artifact_that_fits_still_decodes() -> None:
    # Skipped nodes compress best of all and no reduction shrinks them: 145,000 of them are about
    # all the budget takes, and the most a legitimate artifact unpacks to.
    members = [
        ("metadata", {"dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json"}),
        ("results", _skipped_nodes(145_000)),
        ("elapsed_time", 1.0),
        ("args", {"which": "build"}),
    ]
    data, binary, status = packing.pack_members(members, [])
    packed = base64.b64decode(binary[RR])
    unpacked = len(gzip.decompress(packed))
    assert unpacked > 40 * MiB
    decoded = results.decode(configmap(data, binary, status))
    assert (decoded.status, decoded.upload_error) == ("uploaded", None)
    assert decoded.run_results is not None
    assert len(decoded.run_results["results"]) == 145_000
    print(f"\n145,000 skipped nodes: {len(packed)} bytes packed unpack to {unpacked}")


@pytest.fixture(scope="module")
def fault_fixed(scaled: ScaledBuild) -> ScaledBuild:
    """The data the failing models read, repaired: a retry now succeeds where the build failed."""
    fix_fault(scaled.project)
    seeded = invoke(scaled.project, scaled.base, "seed", "--select", "fault_switch")
    assert seeded.exit_code == 0, seeded.stdout[-3000:]
    return scaled


@pytest.mark.parametrize("level", range(len(RUN_RESULTS_STEPS) + 1))
def test_dbt_loads_and_retries_every_level(
    fault_fixed: ScaledBuild, scaled_levels: list[Level], level: int
) -> None:
    packed = scaled_levels[level].decoded.run_results
    assert packed is not None
    state = fault_fixed.base / f"state_{level}"
    state.mkdir()
    (state / "run_results.json").write_text(json.dumps(packed))
    assert load_with_dbt(state / "run_results.json") == [len(packed["results"])]
    rerun = {r["unique_id"] for r in fault_fixed.document["results"] if r["status"] in RETRYABLE}
    if "successful_results" in RUN_RESULTS_STEPS[:level]:
        # Only what dbt retry needs is left, and that is exactly what it reruns.
        assert {r["unique_id"] for r in packed["results"]} == rerun
    started = time.monotonic()
    retry = invoke(fault_fixed.project, fault_fixed.base, "retry", "--state", str(state))
    assert retry.exit_code == 0, retry.stdout[-3000:]
    resumed = json.loads((retry.target_path / "run_results.json").read_text())
    assert {r["unique_id"] for r in resumed["results"]} == rerun
    assert {r["status"] for r in resumed["results"]} == {"success"}
    print(f"\nretry from level {level}: {len(rerun)} nodes in {time.monotonic() - started:.0f}s")


# --- memory ---------------------------------------------------------------------------------------

# The peak resident set of this process: VmHWM, since ru_maxrss starts from the peak of the
# process that forked it (pytest, far larger) and so cannot tell what packing took.
_PEAK_SCRIPT = """
import json, re, sys
from pathlib import Path
from kubedbt.io.uploader import UploadTarget, read_and_pack
from kubedbt.core.results import payload_size

def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])

before = peak_kib()
data, binary, status = read_and_pack(UploadTarget("ns", "cm", Path(sys.argv[1]), Path("none")))
after = peak_kib()
summary = json.loads(data["summary.json"])
print(json.dumps({"before": before, "after": after, "size": payload_size(data, binary),
                  "dropped": summary["dropped"], "nodes": summary["nodes"]}))
"""


def test_fifty_megabytes_pack_in_bounded_memory(tmp_path: Path) -> None:
    nodes = write_run_results(tmp_path / "run_results.json", size=50 * 2**20)
    started = time.monotonic()
    # A fresh process, so its peak resident set is the sidecar's: imports, then packing.
    completed = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    seconds = time.monotonic() - started
    measured = json.loads(completed.stdout)
    before, after = measured["before"] / 1024, measured["after"] / 1024  # KiB -> MiB
    assert measured["nodes"] == nodes
    assert measured["size"] <= results.CONFIGMAP_LIMIT - results.METADATA_RESERVE
    # Parsing the file whole would take several times its 50 MB.
    assert after - before < 32, f"packing took {after - before:.0f} MiB"
    assert after < 128
    print(
        f"\n50 MiB of run_results ({nodes} nodes) packed in {seconds:.1f}s to {measured['size']} "
        f"bytes, dropped {measured['dropped']}: peak RSS {after:.0f} MiB, {before:.0f} MiB "
        "of it before packing"
    )
