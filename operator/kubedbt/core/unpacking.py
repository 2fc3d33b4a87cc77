"""Reading back what kubedbt.core.packing wrote, without trusting it: every size is bounded first.

A results ConfigMap is written from inside the run's pod, so whatever runs there can put anything
in it: a gzip bomb (1 MiB that unpacks to 1 GiB), JSON nested a hundred thousand deep, garbage.
Its readers are long-lived (the triggerer, the operator planning `dbt retry`, restore-state in a
128 MiB container), so each size is checked before the work it would cost is done: the packed
size before gunzip, the unpacked size before anything unpacked is held, the count of JSON values
before parsing. What cannot be read raises UnreadableError, whose message names the key and the
limit: kubedbt.core.results.decode turns it into an upload error, restore-state into its exit
message.
"""

from __future__ import annotations

import functools
import json
import types
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, Final, Union, get_args, get_origin, get_type_hints, is_typeddict

from kubedbt.core.errors import TerminalError

# What a packed artifact may unpack to. Measured (tests/unit/test_results.py checks the room): the
# real 2,000-model `dbt build` of tests/unit/scaled_project.py writes 7.6 MB of run_results, which
# pack whole to 678 KB and unpack to 7.2 MiB (gzip ratio 11; reduced levels of a 50 MB synthetic
# file reach 12 to 18). The most compressible legitimate artifact is one of nothing but skipped
# nodes (a root model failed; no reduction shrinks them): 145,000 of them pack to 965 KB, all the
# budget takes, and unpack to 40 MiB (ratio 43). The cap is three times that extreme, 17 times the
# real project. A file past it costs only the resume (the full command runs instead of dbt retry)
# and the pushed run_results; the outcome comes from summary.json.
MAX_UNPACKED_BYTES: Final = 128 * 1024 * 1024
# How many JSON values a document may hold, counted as its `[ { , :` bytes (an upper bound: those
# inside strings count too). Parsing costs memory per value more than per byte: 128 MiB of
# `{"a":1},` would parse to 3 GiB. Measured: the real 2,000-model file has 180,000 marks, the
# 145,000 skipped nodes 3.9 million (decoding them peaks 209 MiB above the reader's baseline);
# twice that extreme is allowed. The worst a forged file within both caps was measured to cost:
# 551 MiB (8 million marks of small objects), 384 MiB (one 128 MiB string).
MAX_JSON_VALUES: Final = 8_000_000
# Bytes unpacked at a time: all a refused gzip bomb ever costs.
CHUNK_BYTES: Final = 64 * 1024
_MARKS: Final = (b"[", b"{", b",", b":")


class UnreadableError(TerminalError, ValueError):
    """Content that kubedbt refuses or fails to read; the message says which and why."""


def describe_size(size: int) -> str:
    """A byte count as a person reads a limit: in MiB when it is a whole number of them."""
    return f"{size >> 20} MiB" if size and size % (1 << 20) == 0 else f"{size} bytes"


def check_packed_size(size: int, *, name: str, limit: int) -> None:
    """Refuse a packed blob larger than `limit` before any of it is unpacked."""
    if size > limit:
        raise UnreadableError(
            f"{name} is more than {describe_size(limit)} packed, more than a ConfigMap holds; "
            "refusing to read it"
        )


def gunzip_chunks(
    packed: bytes, *, name: str, limit: int, max_unpacked: int = MAX_UNPACKED_BYTES
) -> Iterator[bytes]:
    """The gzip stream `packed`, unpacked CHUNK_BYTES at a time, refused past `max_unpacked`.

    Raises UnreadableError once the output passes the bound, so a consumer holds one chunk more than
    what it keeps; also on a packed size over `limit`, on what is not one whole gzip member, and
    on bytes after it (kubedbt.core.packing writes exactly one).
    """
    check_packed_size(len(packed), name=name, limit=limit)
    # wbits 31: the gzip container only (not zlib's or raw deflate), as the packer writes it.
    stream = zlib.decompressobj(wbits=31)
    pending, unpacked = packed, 0
    # Every pass but the last yields a full chunk, so the bound is never what ends the loop.
    for _ in range(max_unpacked // CHUNK_BYTES + 2):
        try:
            chunk = stream.decompress(pending, CHUNK_BYTES)
        except zlib.error as e:
            raise UnreadableError(f"{name} is not a valid gzip stream ({e})") from e
        unpacked += len(chunk)
        if unpacked > max_unpacked:
            raise UnreadableError(
                f"{name} unpacks to more than {describe_size(max_unpacked)}; refusing to read it"
            )
        if chunk:
            yield chunk
        pending = stream.unconsumed_tail
        if stream.eof:
            if stream.unused_data:
                raise UnreadableError(f"{name} has data after the end of its gzip stream")
            return
        if not pending and not chunk:
            raise UnreadableError(f"{name} is truncated: its gzip stream ends early")
    raise UnreadableError(
        f"{name} unpacks to more than {describe_size(max_unpacked)}; refusing to read it"
    )


def count_marks(text: bytes | bytearray) -> int:
    """The `[ { , :` bytes of JSON text: at least its count of values and keys, less one."""
    return sum(text.count(mark) for mark in _MARKS)


def gunzip_json(packed: bytes, *, name: str, limit: int) -> Any:
    """The JSON document a packed blob holds, each bound checked before the work it limits.

    Unpacked twice: first only measured (size and JSON values), holding one chunk at a time, so a
    bomb is refused without ever holding what it unpacks to; then for real, into a buffer of the
    size measured.
    """
    size = marks = 0
    for chunk in gunzip_chunks(packed, name=name, limit=limit):
        size += len(chunk)
        marks += count_marks(chunk)
    _check_marks(marks, name=name)
    text = bytearray(size)
    at = 0
    for chunk in gunzip_chunks(packed, name=name, limit=limit):
        text[at : at + len(chunk)] = chunk
        at += len(chunk)
    return _loads(text, name=name)


def parse_json(text: bytes | bytearray, *, name: str) -> Any:
    """JSON text that may be forged, parsed only when its count of values is within bounds."""
    _check_marks(count_marks(text), name=name)
    return _loads(text, name=name)


def _check_marks(marks: int, *, name: str) -> None:
    if marks > MAX_JSON_VALUES:
        raise UnreadableError(
            f"{name} holds more than {MAX_JSON_VALUES} JSON values (counting its [ {{ , : marks); "
            "refusing to read it"
        )


def _loads(text: bytes | bytearray, *, name: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError as e:  # the C parser's guard against nesting deeper than the stack
        raise UnreadableError(f"{name} is JSON nested too deeply to read") from e
    except MemoryError as e:
        raise UnreadableError(f"{name} is JSON too large to read in memory") from e
    except ValueError as e:  # JSONDecodeError, and UnicodeDecodeError for what is not UTF-8
        raise UnreadableError(f"{name} is not valid JSON ({e})") from e


def type_error(value: Any, hint: Any, *, where: str = "") -> str | None:
    """How parsed JSON differs from the type `hint`, or None when it matches.

    The TypedDicts of kubedbt.core.results are the schema, so a field added there is checked here
    without a second list to keep in step. Covers what they use: str, int, float (which takes an
    int), None, Any, unions, list[X], dict[str, X] and TypedDicts (every key required).
    """
    if hint is Any:
        return None
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if any(type_error(value, arg) is None for arg in args):
            return None
        return _mismatch(value, " or ".join(_hint_name(arg) for arg in args), where)
    if is_typeddict(hint):
        if not isinstance(value, dict):
            return _mismatch(value, "an object", where)
        return _first(
            f"{_at(where, key)} is missing"
            if key not in value
            else type_error(value[key], field, where=_at(where, key))
            for key, field in _fields(hint).items()
        )
    if origin is dict:
        if not isinstance(value, dict):
            return _mismatch(value, "an object", where)
        return _first(
            type_error(item, args[1], where=_at(where, key)) for key, item in value.items()
        )
    if origin is list:
        if not isinstance(value, list):
            return _mismatch(value, "a list", where)
        return _first(
            type_error(item, args[0], where=f"{where}[{index}]") for index, item in enumerate(value)
        )
    accepted = (int, float) if hint is float else hint
    return None if isinstance(value, accepted) else _mismatch(value, _hint_name(hint), where)


def _first(problems: Iterable[str | None]) -> str | None:
    return next((problem for problem in problems if problem is not None), None)


@functools.cache
def _fields(typed_dict: Any) -> dict[str, Any]:
    return get_type_hints(typed_dict)


_JSON_NAMES: Final[dict[type, str]] = {
    type(None): "null",
    bool: "a boolean",
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "an object",
}


def _hint_name(hint: Any) -> str:
    if is_typeddict(hint):
        return "an object"
    return _JSON_NAMES.get(get_origin(hint) or hint, str(hint))


def _mismatch(value: Any, expected: str, where: str) -> str:
    return (
        f"{where or 'it'} is {_JSON_NAMES.get(type(value), type(value).__name__)}, not {expected}"
    )


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
