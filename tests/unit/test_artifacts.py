"""Artifact storage: URLs, the run's folder, and the upload's layout on a real dbt run's target.

The layout (which objects, compressed how, the archive, the download dbt can use as --state) is
checked with obstore's own local-file store; the same code against a real S3 server (MinIO), with
the pod terminating and the server down, is tests/cluster/test_artifacts.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from kubedbt.core.artifacts import (
    INDEX_OBJECT,
    artifacts_url,
    console_url,
    key_segment,
    run_folder,
    run_url,
)
from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.naming import RunIdentity
from kubedbt.io.artifacts import archive_chunks, download_run, gzip_chunks, redact, upload_run
from tests.unit.dbt_runs import DbtRun, load_with_dbt


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("s3://bucket", "s3://bucket"),
        ("s3://bucket/", "s3://bucket"),
        ("s3://bucket//dbt/prod/", "s3://bucket/dbt/prod"),
        ("gs://bucket/a", "gs://bucket/a"),
        ("az://account/container/x", "az://account/container/x"),
    ],
)
def test_artifacts_urls_are_normalised(given: str, normalised: str) -> None:
    assert artifacts_url("artifacts_url", given) == normalised


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("", "expected an object storage URL"),
        ("/data/artifacts", "unsupported scheme none"),
        ("http://minio:9000/bucket", "unsupported scheme http://"),
        ("s3://AKIAEXAMPLE:hunter2@bucket/x", "must not carry credentials"),
        # AWS secret keys often hold a "/", which urlsplit takes for the start of the path.
        ("s3://AKIAEXAMPLE:hunter2/K7MDENG@bucket/x", "must not carry credentials"),
        ("s3:///prefix", "names no bucket"),
        ("s3://bucket/x?versionId=1", "query"),
        ("s3://bucket/a/../b", ". or .."),
    ],
)
def test_bad_artifacts_urls_are_refused_naming_the_parameter(given: str, problem: str) -> None:
    with pytest.raises(InvalidSpecError, match=problem) as raised:
        artifacts_url("artifacts_url", given)
    assert raised.value.parameter == "artifacts_url"
    assert "hunter2" not in str(raised.value)


def test_the_run_folder_is_readable_and_unique_per_try() -> None:
    identity = RunIdentity("daily", "marts.build", "scheduled__2026-11-23T00:00:00+00:00")
    assert run_folder(identity) == "daily/marts.build/scheduled__2026-11-23T00:00:00+00:00/try-1"
    mapped = RunIdentity("daily", "build", "manual run/1", map_index=3, try_number=2)
    assert run_folder(mapped).startswith("daily/build/manual_run_1-")
    assert run_folder(mapped).endswith("/map-3/try-2")
    # Replacing characters must not make two runs share a folder.
    assert key_segment("a/b") != key_segment("a_b")
    assert key_segment("..") != ".."
    assert run_url("s3://b/p/", identity) == f"s3://b/p/{run_folder(identity)}/"


def test_console_links() -> None:
    assert console_url("s3://b/p/d/try-1/") == (
        "https://s3.console.aws.amazon.com/s3/buckets/b?prefix=p%2Fd%2Ftry-1%2F"
    )
    assert console_url("gs://b/p/") == "https://console.cloud.google.com/storage/browser/b/p/"
    assert console_url("az://account/container/p/") is None


def test_compressing_and_archiving_stream(dbt_runs: dict[str, DbtRun], tmp_path: Path) -> None:
    target = dbt_runs["success"].target_path
    manifest = target / "manifest.json"
    assert gzip.decompress(b"".join(gzip_chunks(manifest))) == manifest.read_bytes()
    archive = tmp_path / "target.tar.gz"
    archive.write_bytes(b"".join(archive_chunks(target)))
    with tarfile.open(archive) as opened:
        names = opened.getnames()
    assert any(name.startswith("compiled/jaffle_shop/models/") for name in names)
    assert any(name.startswith("run/jaffle_shop/models/") for name in names)
    # The JSON artifacts travel as objects of their own, dbt's parse cache not at all.
    assert not {"manifest.json", "run_results.json", "partial_parse.msgpack"} & set(names)


def test_upload_then_download_gives_back_what_dbt_wrote(
    dbt_runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    run = dbt_runs["success"]
    store = tmp_path / "store"
    store.mkdir()
    url = f"file://{store}/runs/try-1/"
    (store / "runs" / "try-1").mkdir(parents=True)
    record = asyncio.run(
        upload_run(url, target_path=run.target_path, log_file=run.log_file, lineage=b"x", budget=30)
    )
    assert record["error"] is None, record
    names = [o["name"] for o in record["objects"]]
    assert names[:2] == ["manifest.json.gz", "run_results.json.gz"]
    assert {"dbt.log.gz", "target.tar.gz", "lineage.json.gz"} <= set(names)
    stored = sorted(p.name for p in (store / "runs" / "try-1").iterdir())
    assert stored == sorted([*names, INDEX_OBJECT])
    index = json.loads((store / "runs" / "try-1" / INDEX_OBJECT).read_text())
    assert index == {"objects": record["objects"], "complete": True}
    for item in record["objects"]:
        assert (store / "runs" / "try-1" / item["name"]).stat().st_size == item["bytes"]

    (store / "runs" / "try-1" / "lineage.json.gz").unlink()  # b"x" is no gzip
    into = tmp_path / "downloaded"
    asyncio.run(download_run(url, into))
    assert (into / "manifest.json").read_bytes() == (run.target_path / "manifest.json").read_bytes()
    assert (into / "logs" / "dbt.log").read_bytes() == run.log_file.read_bytes()
    compiled = into / "compiled" / "jaffle_shop" / "models" / "marts" / "customers.sql"
    assert (
        compiled.read_text()
        == (run.target_path / "compiled/jaffle_shop/models/marts/customers.sql").read_text()
    )
    # dbt's own loader reads the downloaded run_results, as `--state` would.
    assert load_with_dbt(into / "run_results.json") == [28]


def test_a_store_that_cannot_be_written_is_reported_not_raised(
    dbt_runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    run = dbt_runs["success"]
    target = tmp_path / "target"
    shutil.copytree(run.target_path, target)
    missing = tmp_path / "no-such-dir"
    record = asyncio.run(
        upload_run(
            f"file://{missing}/", target_path=target, log_file=run.log_file, lineage=None, budget=5
        )
    )
    assert record["error"] is not None
    assert record["objects"] == []


def test_a_store_too_slow_is_abandoned_at_the_deadline(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    # Random bytes do not compress: 64 MB to push through gzip takes far longer than 0.2 s.
    with (target / "manifest.json").open("wb") as out:
        for _ in range(64):
            out.write(os.urandom(1 << 20))
    (tmp_path / "store").mkdir()
    started = time.monotonic()
    record = asyncio.run(
        upload_run(
            f"file://{tmp_path}/store/",
            target_path=target,
            log_file=tmp_path / "no.log",
            lineage=None,
            budget=0.2,
        )
    )
    assert time.monotonic() - started < 5
    assert record["error"] == "the upload did not finish within 0.2s"
    assert record["objects"] == []


def test_errors_never_carry_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    text = redact("denied for wJalrXUtnFEMI/K7MDENG in us-east-1")
    assert text == "denied for *** in us-east-1"
