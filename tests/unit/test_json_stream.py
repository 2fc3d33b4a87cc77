"""The streaming JSON reader against json.load, read in every small piece size."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from kubedbt.core.json_stream import json_members

# Numbers at every level and of every shape, the ones a cut read could split: "1." or "-3e".
DOCUMENT = {
    "elapsed_time": 1.25,
    "tiny": -3e-7,
    "big": 12345678901234,
    "results": [{"execution_time": 0.5, "message": "x,}]"}, 2.75, -1, 1e10, 0],
    "flag": True,
    "none": None,
    "last": 7.5,
}


def _read(text: str, read_chars: int) -> dict[str, Any]:
    return {
        key: list(value) if key == "results" else value
        for key, value in json_members(io.StringIO(text), read_chars=read_chars)
    }


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("read_chars", range(1, 13))
def test_numbers_cut_by_a_read_are_read_whole(read_chars: int, indent: int | None) -> None:
    assert _read(json.dumps(DOCUMENT, indent=indent), read_chars) == DOCUMENT


def test_a_number_that_ends_the_file_is_read() -> None:
    assert _read('{"results": [], "n": 12.5}', 1) == {"results": [], "n": 12.5}


# --- top-level objects read entry by entry (manifest.json's "nodes", "sources") -------------------

MANIFEST_LIKE = {
    "metadata": {"adapter_type": "duckdb", "n": -2.5e3},
    "nodes": {"model.a": {"depends_on": {"nodes": ["seed.b"]}, "x": 1.5}, "seed.b": {}, "c": 7},
    "sources": {},
    "macros": None,
    "results": [1, {"}": "{"}],
    "child_map": {"seed.b": ["model.a"]},
    "last": 0.25,
}
OBJECTS = frozenset({"nodes", "sources", "macros", "child_map"})


def _read_objects(text: str, read_chars: int) -> dict[str, Any]:
    read: dict[str, Any] = {}
    for key, value in json_members(io.StringIO(text), read_chars=read_chars, objects=OBJECTS):
        if key in OBJECTS and value is not None:
            value = dict(value)
        elif key == "results":
            value = list(value)
        read[key] = value
    return read


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("read_chars", range(1, 13))
def test_objects_read_entry_by_entry_equal_json_load(read_chars: int, indent: int | None) -> None:
    assert _read_objects(json.dumps(MANIFEST_LIKE, indent=indent), read_chars) == MANIFEST_LIKE


def test_an_object_the_consumer_stops_reading_is_drained_before_the_next_member() -> None:
    seen: dict[str, Any] = {}
    text = json.dumps(MANIFEST_LIKE)
    for key, value in json_members(io.StringIO(text), read_chars=3, objects=OBJECTS):
        # Only the first entry of each streamed object is taken; the rest must be skipped whole.
        seen[key] = next(value, "empty") if key in OBJECTS and value is not None else value
    assert seen["nodes"] == ("model.a", MANIFEST_LIKE["nodes"]["model.a"])
    assert seen["sources"] == "empty"
    assert seen["macros"] is None  # named, but not an object: read as it is
    assert seen["child_map"] == ("seed.b", ["model.a"])
    assert seen["last"] == 0.25


def test_members_not_named_in_objects_are_read_whole() -> None:
    members = dict(json_members(io.StringIO(json.dumps(MANIFEST_LIKE)), read_chars=5))
    assert members["nodes"] == MANIFEST_LIKE["nodes"]
    assert members["metadata"] == MANIFEST_LIKE["metadata"]


@pytest.mark.parametrize(
    "broken", ['{"nodes": {"a": 1 "b": 2}}', '{"nodes": {1: 2}}', '{"nodes": {"a": 1,']
)
def test_a_broken_streamed_object_is_refused(broken: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)expect"):
        _read_objects(broken, 3)
