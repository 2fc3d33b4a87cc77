"""Copying a run's artifacts to object storage, and reading them back (kubectl dbt artifacts).

obstore does the talking: one small wheel with no Python dependencies, async, and the credential
chains of S3, GCS and Azure as their own SDKs resolve them (environment variables, web identity
tokens such as EKS IRSA and GKE workload identity, instance metadata). So the sidecar needs no
credentials of kubedbt's making: the pod's identity, or the Secret named by `artifacts_secret`
whose keys (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) become the uploader's environment.

Files are compressed while they stream up, a chunk at a time: the sidecar's memory limit is
small and a manifest can be hundreds of MB. Layout and names are in kubedbt.core.artifacts.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import os
import re
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.store import from_url

from kubedbt.core.artifacts import (
    INDEX_OBJECT,
    JSON_ARTIFACTS,
    LINEAGE_OBJECT,
    LOG_OBJECT,
    NOT_ARCHIVED,
    TARGET_ARCHIVE,
    ArtifactsRecord,
    StoredObject,
    object_name,
)
from kubedbt.core.errors import shorten

log = logging.getLogger("kubedbt.artifacts")

CHUNK = 1 << 20
# Parts of a multipart upload in flight at once: each holds a 5 MB chunk in the sidecar's memory.
CONCURRENCY = 2
# Names of environment variables whose values never appear in an error kubedbt reports.
_SENSITIVE = re.compile(r"SECRET|KEY|TOKEN|PASSWORD|CREDENTIAL|SAS", re.IGNORECASE)


def open_store(url: str, *, timeout: float) -> Any:
    """A store rooted at `url`, configured from the environment (AWS_*, GOOGLE_*, AZURE_*).

    No client options are passed: obstore would then drop every one the environment sets
    (AWS_ALLOW_HTTP, a proxy, timeouts). Callers bound the whole transfer with a deadline; here
    retries stop starting once `timeout` has passed.
    """
    return from_url(
        url,
        retry_config={
            "max_retries": 3,
            "retry_timeout": timedelta(seconds=max(1.0, timeout)),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
        },
    )


def gzip_chunks(path: Path) -> Iterator[bytes]:
    """The gzip of a file, produced a chunk at a time."""
    # wbits 31: the gzip container, so the object reads with any gunzip.
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            if out := packer.compress(chunk):
                yield out
    yield packer.flush()


class _Sink(io.RawIOBase):
    """A write-only file whose contents are taken away as they come."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        out, self.buffer = bytes(self.buffer), bytearray()
        return out


def archive_chunks(root: Path) -> Iterator[bytes]:
    """A tar.gz of `root` (the target path) without the files that travel on their own."""
    sink = _Sink()
    with tarfile.open(fileobj=sink, mode="w|gz") as archive:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or path.is_symlink() or relative.parts[0] in NOT_ARCHIVED:
                continue
            archive.add(path, arcname=str(relative), recursive=False)
            if chunk := sink.take():
                yield chunk
    if chunk := sink.take():
        yield chunk


def redact(message: str) -> str:
    """`message` without the values of credential-like environment variables."""
    for name, value in os.environ.items():
        if len(value) >= 4 and _SENSITIVE.search(name) and value in message:
            message = message.replace(value, "***")
    return message


class _AbandonedError(Exception):
    """Raised into obstore's reading of a file once the upload's deadline has passed."""


async def _put(
    store: Any, name: str, chunks: Iterator[bytes] | bytes, stop: threading.Event
) -> StoredObject:
    size = 0

    def counted() -> Iterator[bytes]:
        # obstore pulls this generator on a thread of its own, which cancelling the awaiting
        # task does not stop: past the deadline it ends the upload here instead.
        nonlocal size
        for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
            if stop.is_set():
                raise _AbandonedError(name)
            size += len(chunk)
            yield chunk

    await obstore.put_async(store, name, counted(), max_concurrency=CONCURRENCY)
    return {"name": name, "bytes": size}


async def upload_run(
    url: str,
    *,
    target_path: Path,
    log_file: Path,
    lineage: bytes | None,
    budget: float,
) -> ArtifactsRecord:
    """Copy the run's artifacts under `url` within `budget` seconds; never raises.

    The index object goes last, so its presence says the folder is complete. When something
    fails, what was stored so far is kept and the record says what went wrong.
    """
    started = time.monotonic()
    stored: list[StoredObject] = []
    error: str | None = None
    stop = threading.Event()
    try:
        store = open_store(url, timeout=budget)
        await asyncio.wait_for(
            _upload_all(store, stored, target_path, log_file, lineage, stop), timeout=budget
        )
    except asyncio.TimeoutError:
        error = f"the upload did not finish within {budget:.1f}s"
    except Exception as e:  # any failure of the store: the run's outcome must not depend on it
        error = shorten(redact(f"{type(e).__name__}: {e}"), 500)
    finally:
        stop.set()
    seconds = round(time.monotonic() - started, 3)
    if error is not None:
        log.warning("artifacts upload to %s stopped: %s", url, error)
    else:
        log.info("uploaded %d artifacts to %s in %.1fs", len(stored), url, seconds)
    return {"url": url, "objects": stored, "error": error, "seconds": seconds}


async def _upload_all(
    store: Any,
    stored: list[StoredObject],
    target_path: Path,
    log_file: Path,
    lineage: bytes | None,
    stop: threading.Event,
) -> None:
    for file_name in JSON_ARTIFACTS:
        path = target_path / file_name
        if path.is_file():
            stored.append(await _put(store, object_name(file_name), gzip_chunks(path), stop))
    if log_file.is_file():
        stored.append(await _put(store, LOG_OBJECT, gzip_chunks(log_file), stop))
    if target_path.is_dir():
        stored.append(await _put(store, TARGET_ARCHIVE, archive_chunks(target_path), stop))
    if lineage is not None:
        stored.append(await _put(store, LINEAGE_OBJECT, lineage, stop))
    index = {"objects": stored, "complete": True}
    await _put(store, INDEX_OBJECT, json.dumps(index, indent=1).encode(), stop)


# --- reading back (kubectl dbt artifacts) ---


async def list_run(url: str, *, timeout: float = 30) -> list[StoredObject]:
    """The objects of a run's folder, by name."""
    store = open_store(url, timeout=timeout)
    found: list[StoredObject] = []
    async for batch in obstore.list(store, chunk_size=1000):
        found.extend({"name": meta["path"], "bytes": meta["size"]} for meta in batch)
    return sorted(found, key=lambda o: o["name"])


async def download_run(url: str, into: Path, *, timeout: float = 300) -> list[Path]:
    """Download a run's folder into `into` as dbt wrote it: usable as `--state` or by `dbt docs`.

    JSON artifacts and the log are decompressed, target.tar.gz is unpacked with tarfile's "data"
    filter (no absolute paths, links out of the folder, devices or set-uid bits).
    """
    store = open_store(url, timeout=timeout)
    into.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for item in await list_run(url, timeout=timeout):
        name = item["name"]
        if "/" in name or name.startswith("."):
            continue  # not written by kubedbt: never a path out of `into`
        blob = bytes(await (await obstore.get_async(store, name)).bytes_async())
        if name == TARGET_ARCHIVE:
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
                archive.extractall(into, filter="data")
                written.extend(into / member.name for member in archive.getmembers())
            continue
        path = into / (name.removesuffix(".gz") if name.endswith(".gz") else name)
        if name == LOG_OBJECT:
            path = into / "logs" / "dbt.log"
            path.parent.mkdir(exist_ok=True)
        path.write_bytes(gzip.decompress(blob) if name.endswith(".gz") else blob)
        written.append(path)
    return written
