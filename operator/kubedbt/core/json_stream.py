"""Reading a large JSON object member by member, its big members one entry at a time.

dbt's run_results.json can be tens of MB of compiled SQL, its manifest.json hundreds of MB; the
results sidecar has a small memory limit. This reader holds one value at a time (plus one read),
using the standard library's raw_decode, so reading a file costs the memory of its largest entry
(one result, one manifest node), not of the file: run_results' "results" array is read item by
item, and the top-level objects a caller names (manifest's "nodes", "sources") entry by entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, TextIO

# Characters read at a time; a value larger than this is read in growing pieces.
READ_CHARS = 1 << 16
_NOT_WHITESPACE = re.compile(r"[^ \t\n\r]")
_DECODER = json.JSONDecoder()
# The characters a JSON number is made of, from its first one ("-" or a digit).
_NUMBER = re.compile(r"[-0-9][-+0-9.eE]*")


class _JsonReader:
    """JSON values read one at a time from a text stream.

    The buffer holds the value being read and at most what one read brings past it, so a large
    file costs the memory of its largest value (one result), not of the file. Each turn of a loop
    here consumes input or reads more, so the end of the file bounds them all.
    """

    def __init__(self, stream: TextIO, read_chars: int) -> None:
        self._stream = stream
        self._read_chars = read_chars
        self._buffer = ""
        self._at = 0

    def _more(self) -> bool:
        """Read more, at least as much again as is buffered (a long value takes few reads)."""
        kept = self._buffer[self._at :]
        text = self._stream.read(max(self._read_chars, len(kept)))
        self._buffer, self._at = kept + text, 0
        return bool(text)

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            found = _NOT_WHITESPACE.search(self._buffer, self._at)
            if found:
                self._at = found.start()
                return found.group()
            self._at = len(self._buffer)
            if not self._more():
                return ""

    def expect(self, allowed: str) -> str:
        """Consume the next character, one of `allowed`."""
        found = self.peek()
        if not found or found not in allowed:
            raise ValueError(f"expected one of {allowed!r}, found {found or 'the end'!r}")
        self._at += 1
        return found

    def value(self) -> Any:
        """The next JSON value."""
        self.peek()
        while True:
            # A number is whole only once something that cannot be part of it follows: "1." or
            # "1e" at the end of the buffer would otherwise decode as 1. Strings, arrays,
            # objects and literals end in a character of their own, so they decode whole or fail.
            if self._number_may_go_on() and self._more():
                continue
            try:
                value, end = _DECODER.raw_decode(self._buffer, self._at)
            except json.JSONDecodeError:
                if not self._more():
                    raise
                continue
            self._at = end
            return value

    def _number_may_go_on(self) -> bool:
        number = _NUMBER.match(self._buffer, self._at)
        return number is not None and number.end() == len(self._buffer)

    def items(self) -> Iterator[Any]:
        """The values of the array that comes next, one at a time."""
        self.expect("[")
        if self.peek() == "]":
            self.expect("]")
            return
        while True:
            yield self.value()
            if self.expect(",]") == "]":
                return

    def member_keys(self) -> Iterator[str]:
        """The keys of the object that comes next; each value is read before the next key."""
        self.expect("{")
        if self.peek() == "}":
            self.expect("}")
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise ValueError(f"expected a key, found {key!r}")
            self.expect(":")
            yield key
            if self.expect(",}") == "}":
                return

    def entries(self) -> Iterator[tuple[str, Any]]:
        """The (key, value) pairs of the object that comes next, one at a time."""
        for key in self.member_keys():
            yield key, self.value()


def json_members(
    stream: TextIO, *, read_chars: int = READ_CHARS, objects: frozenset[str] = frozenset()
) -> Iterator[tuple[str, Any]]:
    """The top-level (key, value) pairs of a JSON object, its large members as iterators.

    The "results" array is an iterator of its items, and each member named in `objects` whose
    value is an object is an iterator of its (key, value) pairs. Each pair is read when the
    previous one has been used; such an iterator is drained, one entry at a time, before the next
    pair even if the consumer stopped early.
    """
    reader = _JsonReader(stream, read_chars)
    for key in reader.member_keys():
        streamed: Iterator[Any] | None = None
        if key == "results" and reader.peek() == "[":
            streamed = reader.items()
        elif key in objects and reader.peek() == "{":
            streamed = reader.entries()
        if streamed is None:
            yield key, reader.value()
            continue
        yield key, streamed
        for _ in streamed:
            pass
