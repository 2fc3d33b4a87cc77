"""Entry point of the results sidecar (`kubedbt-sidecar`); the work is in kubedbt.io.uploader.

Imports nothing from Airflow (an import-linter contract keeps it so): the sidecar image installs
the package without the airflow extra.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kubedbt.core.command import JSON_LOG_FILE, TARGET_PATH
from kubedbt.io.uploader import UploadTarget, namespace_from_environment, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubedbt-sidecar",
        description="Upload dbt's run_results.json and a digest of its JSON log into a ConfigMap "
        "once the dbt container has exited (on SIGTERM from the kubelet).",
    )
    parser.add_argument("--configmap", required=True, help="name of the results ConfigMap")
    parser.add_argument("--namespace", help="its namespace (default: the pod's)")
    parser.add_argument("--target-path", default=TARGET_PATH, type=Path, help="dbt's target path")
    parser.add_argument("--log-file", default=JSON_LOG_FILE, type=Path, help="dbt's JSON log")
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=float(os.environ.get("KUBEDBT_GRACE_SECONDS", "30")),
        help="the pod's termination grace period; the upload finishes within it",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the uploader; always exits 0 so the pod's outcome is dbt's alone."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:  # outside a pod, for tests and debugging
        config.load_kube_config()
    target = UploadTarget(
        namespace=args.namespace or namespace_from_environment(),
        configmap=args.configmap,
        target_path=args.target_path,
        log_file=args.log_file,
    )
    return run(client.CoreV1Api(), target, grace_seconds=args.grace_seconds)


if __name__ == "__main__":
    sys.exit(main())
