"""`kubedbt-sidecar restore-state`, the init container that unpacks the previous try's results.

The archive it reads comes from a ConfigMap the earlier pod wrote, so it may be damaged or forged;
restore-state must refuse it within its small memory limit, say why in one line, and exit non-zero
so the init container fails (classified init_failed) rather than dbt retry reading half a file.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from kubedbt import sidecar
from kubedbt.core import results
from kubedbt.io.uploader import UploadTarget, read_and_pack
from tests.unit.dbt_runs import DbtRun, load_with_dbt

MiB = 1 << 20


def _gzip(text: bytes) -> bytes:
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)
    return stream.compress(text) + stream.flush()


def _gzip_bomb(unpacked: int) -> bytes:
    """A real gzip bomb: `unpacked` bytes of zeros, compressed a MiB at a time."""
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join(stream.compress(zeros) for _ in range(unpacked // MiB)) + stream.flush()


def _restore(
    tmp_path: Path, archive: bytes, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, Path]:
    """restore-state on `archive` as the init container runs it: exit code, stderr, state dir."""
    path = tmp_path / "previous" / results.RUN_RESULTS_KEY
    path.parent.mkdir()
    path.write_bytes(archive)
    state = tmp_path / "state"
    code = sidecar.restore_state(["--archive", str(path), "--into", str(state)])
    return code, capsys.readouterr().err, state


def test_restores_what_the_sidecar_packed_and_dbt_loads_it(
    dbt_runs: dict[str, DbtRun], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = dbt_runs["fail_model"]
    _, binary, _ = read_and_pack(UploadTarget("ns", "cm", run.target_path, run.log_file))
    # The ConfigMap volume holds the binaryData key decoded, as the init container sees it.
    code, err, state = _restore(tmp_path, base64.b64decode(binary[results.RUN_RESULTS_KEY]), capsys)
    assert (code, err) == (0, "")
    restored = state / "run_results.json"
    written = json.loads((run.target_path / "run_results.json").read_text())
    assert json.loads(restored.read_text()) == written
    assert load_with_dbt(restored) == [len(written["results"])]


@pytest.mark.parametrize(
    ("archive", "problem"),
    [
        pytest.param(
            lambda: _gzip_bomb(200 * MiB),
            "unpacks to more than 128 MiB; refusing to read it",
            id="gzip-bomb-200MiB",
        ),
        pytest.param(
            lambda: _gzip(random.Random(0).randbytes(results.CONFIGMAP_LIMIT)),
            "is more than 1 MiB packed, more than a ConfigMap holds; refusing to read it",
            id="over-the-configmap-limit",
        ),
        pytest.param(
            lambda: _gzip(b'{"results": []}' * 10_000)[:-50],
            "is truncated: its gzip stream ends early",
            id="truncated",
        ),
        pytest.param(
            lambda: b"not gzip",
            "is not a valid gzip stream "
            "(Error -3 while decompressing data: incorrect header check)",
            id="not-gzip",
        ),
    ],
)
def test_a_bad_archive_fails_with_one_line_and_leaves_no_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    archive: Callable[[], bytes],
    problem: str,
) -> None:
    code, err, state = _restore(tmp_path, archive(), capsys)
    assert code == 1
    path = tmp_path / "previous" / results.RUN_RESULTS_KEY
    assert err == f"kubedbt-sidecar restore-state: {path} {problem}\n"
    # dbt retry must not start on part of a file.
    assert list(state.iterdir()) == []


def test_a_missing_archive_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "nowhere" / results.RUN_RESULTS_KEY
    code = sidecar.restore_state(["--archive", str(archive), "--into", str(tmp_path / "state")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(archive) in err


# The peak resident set of the init container's process: VmHWM, as in test_results.py.
_PEAK_SCRIPT = """
import re, sys
from collections.abc import Callable
from pathlib import Path
from kubedbt.sidecar import main

def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])

before = peak_kib()
code = main(["restore-state", "--archive", sys.argv[1], "--into", sys.argv[2]])
print(before, peak_kib())
sys.exit(code)
"""


def test_a_bomb_is_refused_within_the_containers_memory(tmp_path: Path) -> None:
    archive = tmp_path / results.RUN_RESULTS_KEY
    archive.write_bytes(_gzip_bomb(512 * MiB))
    # A fresh process, as the init container runs: its exit code, stderr and peak memory.
    completed = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(archive), str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stderr == (
        f"kubedbt-sidecar restore-state: {archive} unpacks to more than 128 MiB; "
        "refusing to read it\n"
    )
    before, after = (int(kib) / 1024 for kib in completed.stdout.split())
    # The container's limit is 128Mi; what the bomb unpacks to is never in memory.
    assert after - before < 16, f"restore-state took {after - before:.0f} MiB"
    assert list((tmp_path / "state").iterdir()) == []
