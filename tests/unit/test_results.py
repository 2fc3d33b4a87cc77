"""Packing results under the ConfigMap limit, and reading them back."""

from __future__ import annotations

import base64
import gzip
import json
import random
import string
from typing import Any

import pytest

from kubedbt.core import results


def _synthetic_run_results(nodes: int, *, seed: int = 7) -> dict[str, Any]:
    """A run_results.json of `nodes` nodes with varied SQL, as a large real project produces."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 12)))

    entries = []
    for i in range(nodes):
        columns = ",\n    ".join(
            f"{word()}.{word()} as {word()}_{i}" for _ in range(rng.randint(5, 25))
        )
        status = rng.choices(["success", "error", "fail", "pass", "skipped"], [80, 2, 2, 15, 1])[0]
        entries.append(
            {
                "status": status,
                "timing": [
                    {
                        "name": "compile",
                        "started_at": "2026-11-22T07:00:00.000000Z",
                        "completed_at": "2026-11-22T07:00:00.100000Z",
                    },
                    {
                        "name": "execute",
                        "started_at": "2026-11-22T07:00:00.100000Z",
                        "completed_at": "2026-11-22T07:00:01.000000Z",
                    },
                ],
                "thread_id": f"Thread-{rng.randint(1, 8)}",
                "execution_time": rng.random() * 30,
                "adapter_response": {"_message": "OK", "rows_affected": rng.randint(0, 10**6)},
                "message": (
                    f"Database Error in model m_{i}: " + " ".join(word() for _ in range(80))
                )
                if status == "error"
                else "OK",
                "failures": rng.randint(1, 100) if status == "fail" else None,
                "unique_id": f"model.big_project.{word()}_{i}",
                "compiled": True,
                "compiled_code": (
                    f"select\n    {columns}\nfrom {word()}.{word()}\n"
                    f"where {word()} > {rng.randint(0, 10**9)}"
                ),
                "relation_name": f'"warehouse"."analytics"."{word()}_{i}"',
                "batch_results": None,
            }
        )
    return {
        "metadata": {
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json",
            "dbt_version": "1.11.16",
            "generated_at": "2026-11-22T07:10:00.000000Z",
            "invocation_id": "4b6d6a4e-0000-4000-8000-000000000000",
        },
        "results": entries,
        "elapsed_time": 1234.5,
        "args": {"which": "build"},
    }


def _configmap(data: dict[str, str], binary: dict[str, str], status: str) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {results.UPLOAD_STATUS: status}},
        "data": data,
        "binaryData": binary,
    }


def test_ten_thousand_nodes_fit_with_the_loss_recorded() -> None:
    document = _synthetic_run_results(10_000)
    raw_size = len(json.dumps(document))
    data, binary, status = results.pack(document, [])
    size = results.payload_size(data, binary)
    assert raw_size > 5 * results.CONFIGMAP_LIMIT, "the synthetic run must really be too large"
    assert size <= results.CONFIGMAP_LIMIT - results.METADATA_RESERVE
    decoded = results.decode(_configmap(data, binary, status))
    assert decoded.status == "uploaded"
    assert decoded.summary is not None
    assert decoded.summary["nodes"] == 10_000
    assert decoded.summary["dropped"][0] == "compiled_code"
    assert decoded.run_results is not None
    kept = decoded.run_results["results"]
    assert all("compiled_code" not in r for r in kept)
    # Whatever was given up, the nodes `dbt retry` needs are still there.
    failed = {
        r["unique_id"] for r in document["results"] if r["status"] in ("error", "fail", "skipped")
    }
    assert failed <= {r["unique_id"] for r in kept}
    dropped = decoded.summary["dropped"]
    print(f"10,000 nodes: {raw_size} bytes raw -> {size} bytes packed, dropped {dropped}")


def test_small_results_are_kept_whole() -> None:
    document = _synthetic_run_results(50)
    data, binary, status = results.pack(document, [])
    decoded = results.decode(_configmap(data, binary, status))
    assert decoded.run_results == document
    assert decoded.summary is not None
    assert decoded.summary["dropped"] == []


@pytest.mark.parametrize(
    ("limit", "dropped"),
    [
        (results.METADATA_RESERVE + 400_000, ["compiled_code"]),
        (
            results.METADATA_RESERVE + 60_000,
            ["compiled_code", "long_messages", "timing", "successful_results"],
        ),
        (
            results.METADATA_RESERVE + 30_000,
            ["compiled_code", "long_messages", "timing", "successful_results", "run_results"],
        ),
    ],
)
def test_detail_is_given_up_in_order(limit: int, dropped: list[str]) -> None:
    document = _synthetic_run_results(2_000)
    data, binary, _ = results.pack(document, [], limit=limit)
    assert results.payload_size(data, binary) <= limit - results.METADATA_RESERVE
    assert json.loads(data[results.SUMMARY_KEY])["dropped"] == dropped
    assert (results.RUN_RESULTS_KEY in binary) == ("run_results" not in dropped)
    if "successful_results" in dropped and results.RUN_RESULTS_KEY in binary:
        kept = results.decode(_configmap(data, binary, "uploaded")).run_results
        assert kept is not None
        expected = [
            r["unique_id"]
            for r in document["results"]
            if r["status"] in ("error", "fail", "skipped")
        ]
        assert [r["unique_id"] for r in kept["results"]] == expected


def test_no_run_results_keeps_the_digest() -> None:
    events: list[results.LogEvent] = [
        {"code": "Z002", "name": "MainEncounteredError", "message": "Parsing Error", "node": None}
    ]
    data, binary, status = results.pack(None, events)
    assert status == "no-results"
    assert binary == {}
    decoded = results.decode(_configmap(data, binary, status))
    assert decoded.run_results is None
    assert decoded.summary is None
    assert decoded.log_events == events


def test_summary_counts_failures_and_slowest() -> None:
    document = _synthetic_run_results(300)
    summary = results.summarize(document)
    statuses = [r["status"] for r in document["results"]]
    assert summary["counts"] == {s: statuses.count(s) for s in sorted(set(statuses))}
    assert [f["unique_id"] for f in summary["failures"]] == [
        r["unique_id"] for r in document["results"] if r["status"] in ("error", "fail")
    ][: results.MAX_FAILURES]
    slowest = max(document["results"], key=lambda r: r["execution_time"])
    assert summary["slowest"][0]["unique_id"] == slowest["unique_id"]
    assert summary["invocation_id"] == document["metadata"]["invocation_id"]
    assert summary["command"] == "build"


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


def test_decode_of_a_pending_configmap() -> None:
    decoded = results.decode(
        {"metadata": {"annotations": {results.UPLOAD_STATUS: "pending"}}, "data": None}
    )
    assert decoded.status == "pending"
    assert decoded.run_results is None


def test_decode_treats_an_unknown_status_as_failed() -> None:
    decoded = results.decode({"metadata": {"annotations": {results.UPLOAD_STATUS: "weird"}}})
    assert decoded.status == "failed"


def test_packed_run_results_are_plain_gzip() -> None:
    document = _synthetic_run_results(3)
    _, binary, _ = results.pack(document, [])
    assert (
        json.loads(gzip.decompress(base64.b64decode(binary[results.RUN_RESULTS_KEY]))) == document
    )
