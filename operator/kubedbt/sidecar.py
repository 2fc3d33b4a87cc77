"""Entry point of the results sidecar (`kubedbt-sidecar`); the work is in kubedbt.io.uploader.

Imports nothing from Airflow (an import-linter contract keeps it so): the sidecar image installs
the package without the airflow extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kubedbt.core.command import (
    JSON_LOG_FILE,
    SELECTED_FILE,
    STATE_DIR,
    STOP_MARKER_FILE,
    TARGET_PATH,
)
from kubedbt.core.live import Snapshot
from kubedbt.core.results import CONFIGMAP_LIMIT
from kubedbt.core.unpacking import UnreadableError, gunzip_chunks
from kubedbt.io.live_progress import PROGRESS_INTERVAL, LiveProgress
from kubedbt.io.uploader import (
    UploadTarget,
    grace_left,
    namespace_from_environment,
    stop_requested,
    upload_within,
)

# Seconds the final upload waits for a progress patch in flight: it must land first, and one
# attempt is bounded by its request timeout (kubedbt.io.live_progress.PROGRESS_TIMEOUT).
PROGRESS_STOP_WAIT = 9.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubedbt-sidecar",
        description="Upload dbt's run_results.json (or the sources.json of source freshness; "
        "with the catalog.json of docs generate), a summary and a digest of its JSON log into a "
        "ConfigMap once the dbt container has exited (on SIGTERM from the kubelet).",
    )
    parser.add_argument("--configmap", required=True, help="name of the results ConfigMap")
    parser.add_argument("--namespace", help="its namespace (default: the pod's)")
    parser.add_argument("--target-path", default=TARGET_PATH, type=Path, help="dbt's target path")
    parser.add_argument("--log-file", default=JSON_LOG_FILE, type=Path, help="dbt's JSON log")
    parser.add_argument(
        "--stop-marker",
        default=STOP_MARKER_FILE,
        type=Path,
        help="the launcher's record of interrupting dbt",
    )
    parser.add_argument(
        "--selected-file",
        default=SELECTED_FILE,
        type=Path,
        help="the command's selection (dbt ls), listed after an interruption",
    )
    parser.add_argument(
        "--state-run-results",
        default=Path(STATE_DIR) / "run_results.json",
        type=Path,
        help="the run_results a dbt retry restored (its selection)",
    )
    parser.add_argument(
        "--artifacts-url",
        help="the run's folder in object storage (s3://, gs://, az://) to copy target/ and the log "
        "to; credentials come from the environment (the pod's identity or artifacts_secret)",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=float(os.environ.get("KUBEDBT_GRACE_SECONDS", "30")),
        help="the pod's termination grace period; the upload finishes within it",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=PROGRESS_INTERVAL,
        help="seconds between two progress patches at most (0: no live progress)",
    )
    return parser


def restore_state(argv: Sequence[str]) -> int:
    """Unpack a previous try's run_results.json.gz into the directory `dbt retry --state` reads.

    The archive comes from a ConfigMap the earlier pod wrote, so it is read within the bounds of
    kubedbt.core.unpacking: this container's memory limit is small and a bomb must not fill the
    volume dbt writes to. Refusing exits 1 with one line on stderr, the init container fails, and
    the run is classified init_failed.
    """
    parser = argparse.ArgumentParser(
        prog="kubedbt-sidecar restore-state",
        description="Unpack the previous try's run_results for dbt retry (an init container).",
    )
    parser.add_argument("--archive", required=True, type=Path, help="run_results.json.gz")
    parser.add_argument("--into", required=True, type=Path, help="the --state directory")
    args = parser.parse_args(argv)
    restored = args.into / "run_results.json"
    try:
        args.into.mkdir(parents=True, exist_ok=True)
        _unpack(args.archive, restored)
    except (UnreadableError, OSError) as e:
        with contextlib.suppress(OSError):
            restored.unlink(missing_ok=True)  # dbt retry must not read a part of it
        print(f"kubedbt-sidecar restore-state: {e}", file=sys.stderr)
        return 1
    logging.info("restored %s into %s", args.archive, args.into)
    return 0


def _unpack(archive: Path, restored: Path) -> None:
    """Stream the archive's gzip into `restored`, one chunk in memory at a time."""
    with archive.open("rb") as packed:
        # One byte past the limit is enough to refuse it; a larger file is never read whole.
        blob = packed.read(CONFIGMAP_LIMIT + 1)
    with restored.open("wb") as out:
        for chunk in gunzip_chunks(blob, name=str(archive), limit=CONFIGMAP_LIMIT):
            out.write(chunk)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the uploader (always exits 0, so the pod's outcome is dbt's alone) or restore-state."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    if argv[:1] == ["restore-state"]:
        return restore_state(argv[1:])
    args = _parser().parse_args(argv)
    target = UploadTarget(
        namespace=args.namespace or namespace_from_environment(),
        configmap=args.configmap,
        target_path=args.target_path,
        log_file=args.log_file,
        stop_marker=args.stop_marker,
        selected_file=args.selected_file,
        state_run_results=args.state_run_results,
        artifacts_url=args.artifacts_url,
    )
    asyncio.run(_follow_and_upload(target, args.grace_seconds, args.progress_interval))
    return 0


async def _follow_and_upload(target: UploadTarget, grace: float, interval: float) -> None:
    """Record progress until the stop signal, then stop doing so and upload the results.

    One API client for the pod's life: in a pod, kubernetes_asyncio's in-cluster configuration
    re-reads the projected token file (which the kubelet rotates) before a request once its copy
    is a minute old, so a patch hours after the start still authenticates.
    """
    received = stop_requested()
    from kubernetes_asyncio import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:  # outside a pod, for tests and debugging
        await config.load_kube_config()
    async with client.ApiClient() as api_client:
        live = LiveProgress(api_client, target, interval=interval) if interval > 0 else None
        stop = asyncio.Event()
        follow = asyncio.ensure_future(live.run(stop) if live else stop.wait())
        logging.info("waiting for the dbt container to finish")
        stop_signal = await received
        logging.info("%s received: collecting results", stop_signal.name)
        started = time.time()
        stop.set()
        # The final upload comes after the last progress patch, never alongside it.
        done, _ = await asyncio.wait({follow}, timeout=PROGRESS_STOP_WAIT)
        if not done:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
        final = _final_tally(live)
        try:
            left = grace_left(target, grace, started) - (time.time() - started)
        except Exception:  # an unreadable stop marker: the whole grace period, as before
            logging.exception("could not read the stop marker")
            left = grace
        await upload_within(api_client, target, grace_seconds=max(1.0, left), progress=final)


def _final_tally(live: LiveProgress | None) -> Snapshot | None:
    """The tally of the whole log for the final upload, or None.

    None when dbt ran no node, and on any error: the results matter, the tally is a courtesy.
    """
    if live is None:
        return None
    try:
        final = live.final()
    except Exception:
        logging.exception("no final progress tally")
        return None
    logging.info("%d progress patches while dbt ran", live.patches)
    # dbt ran no node (a parse error, run-operation): nothing to count.
    return final if final.done or final.running_count else None


def entry() -> None:
    """The console script: main(), then an exit that skips the interpreter's teardown.

    obstore's runtime threads can abort a normal interpreter exit (SIGABRT, "exception not
    rethrown"), which would turn the uploader's exit 0 into 134: everything is flushed, and the
    process ends here.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
