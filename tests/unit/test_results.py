"""Packing results under the ConfigMap limit, and reading them back, on what dbt really wrote.

Every packed file must stay one dbt can load: the tests load each reduction level with dbt's own
artifact loader and resume from it with `dbt retry --state`. Sizes come from real dbt on a
generated project of thousands of models (tests/unit/scaled_project.py), since what decides them
is how well real compiled SQL compresses.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubedbt.core import packing, results
from kubedbt.io.uploader import UploadTarget, read_and_pack
from tests.unit.dbt_runs import DbtRun, invoke, load_with_dbt
from tests.unit.packed import Level, configmap, pack_every_level, round_trip
from tests.unit.scaled_project import fix_fault, generate, write_run_results

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


def test_packed_run_results_are_plain_gzip(dbt_runs: dict[str, DbtRun]) -> None:
    document = _written(dbt_runs["success"])
    _, binary, _ = packing.pack(document, [])
    packed = base64.b64decode(binary[results.RUN_RESULTS_KEY])
    assert json.loads(gzip.decompress(packed)) == document


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
