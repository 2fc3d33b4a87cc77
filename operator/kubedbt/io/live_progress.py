"""Live progress: the results sidecar follows dbt's JSON log while dbt runs.

LogFollower reads the log as dbt writes it and feeds each line to the pure LiveTally
(kubedbt.core.live); LiveProgress patches the tally into the run's results ConfigMap (the
`kubedbt.io/progress` annotation) at a bounded rate, best effort, until the final upload
(kubedbt.io.uploader) takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from kubedbt.core.live import PROGRESS_ANNOTATION, LiveTally, Snapshot
from kubedbt.io.api_errors import describe
from kubedbt.io.kube import RunClient
from kubedbt.io.retry import RetryPolicy
from kubedbt.io.uploader import UploadTarget

log = logging.getLogger("kubedbt.sidecar")

# Seconds between two progress patches at most; the sidecar's --progress-interval.
PROGRESS_INTERVAL = 10.0
# Seconds between two reads of dbt's log (reading is cheap; patching is what is rate-limited).
LOG_POLL = 1.0
# One attempt, short timeouts: a lost progress patch is replaced by the next one.
PROGRESS_TIMEOUT = (3.0, 5.0)
PROGRESS_POLICY = RetryPolicy(attempts=1, deadline=10.0)
# Seconds between two warnings about failed progress patches.
WARN_EVERY = 300.0
# Bytes read from the log per pass, and the longest line kept (dbt's SQL events can be long;
# the events the tally reads are short, so a longer line is skipped, never held).
READ_BYTES = 1 << 16
MAX_LINE = 1 << 20
MAX_READ_PER_PASS = 32 << 20


class LogFollower:
    """Reads dbt's JSON log as it grows and feeds each complete line to a LiveTally.

    The file may not exist yet (dbt has not started), its last line may be half written, and dbt
    rotates it at 10 MB (dbt.log becomes dbt.log.1 and a new dbt.log starts): the open file is
    read to its end before the new one is opened. A file that shrank was truncated: read again
    from its start. Memory holds one read and at most one partial line of MAX_LINE bytes.
    """

    def __init__(self, path: Path, tally: LiveTally) -> None:
        self.path = path
        self.tally = tally
        self._file: Any = None
        self._inode: int | None = None
        self._partial = b""
        self._skipping = False  # inside a line longer than MAX_LINE

    def read_available(self) -> bool:
        """Read what dbt has written since the last call; whether the tally changed."""
        changed = False
        if self._file is None and not self._open():
            return False
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stat = None
        if stat is not None and stat.st_ino != self._inode:
            changed = self._drain()  # the rotated file's last lines, then the new file
            self.close()
            if not self._open():
                return changed
        elif stat is not None and stat.st_size < self._file.tell():
            self._file.seek(0)  # truncated
            self._partial, self._skipping = b"", False
        return self._drain() or changed

    def _open(self) -> bool:
        try:
            self._file = self.path.open("rb")
        except FileNotFoundError:
            return False
        self._inode = os.fstat(self._file.fileno()).st_ino
        self._partial, self._skipping = b"", False
        return True

    def _drain(self) -> bool:
        changed = False
        for _ in range(MAX_READ_PER_PASS // READ_BYTES):  # bounded: the next pass reads on
            chunk = self._file.read(READ_BYTES)
            if not chunk:
                break
            changed = self._lines(chunk) or changed
        return changed

    def _lines(self, chunk: bytes) -> bool:
        changed = False
        *complete, rest = chunk.split(b"\n")
        for piece in complete:
            if not self._skipping:
                line = self._partial + piece
                changed = self.tally.feed(line.decode("utf-8", errors="replace")) or changed
            self._partial, self._skipping = b"", False
        if not self._skipping:
            self._partial += rest
            if len(self._partial) > MAX_LINE:
                self._partial, self._skipping = b"", True
        return changed

    def close(self) -> None:
        """Close the log file (a later read_available opens it again)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class LiveProgress:
    """Follows dbt's log while dbt runs and patches its tally into the results ConfigMap.

    Best effort: a patch that fails is logged (at most once every WARN_EVERY seconds) and the
    next change tries again; nothing here can affect the final upload or the exit code.
    """

    def __init__(
        self, api_client: Any, target: UploadTarget, *, interval: float = PROGRESS_INTERVAL
    ) -> None:
        self.target = target
        self.interval = interval
        self.tally = LiveTally()
        self.follower = LogFollower(target.log_file, self.tally)
        self.client = RunClient(api_client, PROGRESS_POLICY)
        self.patches = 0
        self._sent: Snapshot | None = None
        self._sent_at: float | None = None
        self._warned_at: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: read the log, and patch the tally when due. Never raises."""
        while not stop.is_set():
            try:
                self.follower.read_available()
                await self._patch_if_due()
            except Exception as e:  # best effort: the results upload must still happen
                self._warn(e)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), LOG_POLL)

    def final(self) -> Snapshot:
        """The tally of the whole log, once dbt has exited (the follower is stopped)."""
        try:
            self.follower.read_available()
        except Exception as e:  # the tally is a courtesy: the results upload must still happen
            log.warning("could not read the rest of dbt's log: %s", describe(e))
        finally:
            self.follower.close()
        return self.tally.snapshot()

    async def _patch_if_due(self) -> None:
        snapshot = self.tally.snapshot()
        now = time.monotonic()
        if snapshot == (self._sent or Snapshot()) or (
            self._sent_at is not None and now - self._sent_at < self.interval
        ):
            return
        self._sent_at = now  # a failed patch also waits for the next turn
        body = {"metadata": {"annotations": {PROGRESS_ANNOTATION: snapshot.encode()}}}
        await self.client.patch_configmap(
            self.target.configmap, self.target.namespace, body, PROGRESS_TIMEOUT
        )
        self._sent = snapshot
        self.patches += 1

    def _warn(self, error: Exception) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "could not record progress (retried at the next change): %s", describe(error)
            )
