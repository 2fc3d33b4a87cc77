"""What the sidecar would upload from a directory dbt wrote, read back as a consumer reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubedbt.core import results
from kubedbt.io.uploader import UploadTarget, read_and_pack


def configmap(data: dict[str, str], binary: dict[str, str], status: str) -> dict[str, Any]:
    """The results ConfigMap as the API would return it after the sidecar's patch."""
    return {
        "metadata": {"annotations": {results.UPLOAD_STATUS: status}},
        "data": data,
        "binaryData": binary,
    }


def round_trip(target_path: Path, log_file: Path | None = None) -> results.RunResults:
    """Pack what dbt wrote into target_path as the sidecar does, and decode it."""
    target = UploadTarget("ns", "cm", target_path, log_file or target_path / "no.log")
    return results.decode(configmap(*read_and_pack(target)))


@dataclass(frozen=True)
class Level:
    """What the sidecar uploads at one reduction level, and its payload's size."""

    decoded: results.RunResults
    size: int

    @property
    def dropped(self) -> list[str]:
        """The summary's record of what was given up."""
        assert self.decoded.summary is not None
        return self.decoded.summary["dropped"]


def pack_every_level(target_path: Path) -> list[Level]:
    """What the sidecar uploads from target_path at each reduction level, least reduced first:
    each limit is one byte short of the payload before, which forces the next level."""
    target = UploadTarget("ns", "cm", target_path, target_path / "no.log")
    levels = []
    limit = 1 << 40
    while True:
        data, binary, status = read_and_pack(target, limit=limit)
        size = results.payload_size(data, binary)
        assert size <= limit - results.METADATA_RESERVE
        levels.append(Level(results.decode(configmap(data, binary, status)), size))
        if not binary:
            return levels
        limit = size - 1 + results.METADATA_RESERVE
