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
