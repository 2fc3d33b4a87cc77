"""The command line of `kubectl dbt` (and `kubedbt`): arguments, dispatch and exit codes.

kubectl hands a plugin every argument after its name, so the cluster options (-n, --context,
--kubeconfig) are accepted before or after the subcommand, as with kubectl itself. Exit codes:
0 done, 1 nothing to show (no such run, no results, an API error), 2 a usage error (bad flags,
invalid run parameters, an ambiguous run name). Expected failures print one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

from kubedbt import __version__
from kubedbt.cli import artifacts, describe, logs, render, results, runs
from kubedbt.cli.cluster import Cluster, connect
from kubedbt.cli.context import resolve
from kubedbt.cli.errors import USAGE, CliError
from kubedbt.cli.run_info import RUN_STATUSES, RunFilter, RunStatus
from kubedbt.core.errors import InvalidSpecError

PLUGIN: Final = "kubectl dbt"
DEFAULT_REQUEST_TIMEOUT: Final = 60.0
INTERRUPTED: Final = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `kubectl dbt` command and return its exit code."""
    # Installed twice: as the kubectl plugin (kubectl-dbt) and as `kubedbt`.
    parser = build_parser("kubedbt" if Path(sys.argv[0]).name == "kubedbt" else PLUGIN)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage error (or the help)
        return e.code if isinstance(e.code, int) else USAGE
    try:
        return dispatch(args)
    except CliError as e:
        return _fail(e.message, e.exit_code)
    except InvalidSpecError as e:
        return _fail(str(e), USAGE)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`kubectl dbt logs ... | head`): stop quietly, as kubectl does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def entry() -> None:
    """The console script: main(), then an exit that skips the interpreter's teardown.

    After `artifacts`, obstore's runtime threads can abort a normal interpreter exit (SIGABRT),
    which would turn a scripted download's 0 into 134.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str, exit_code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return exit_code


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command."""
    if args.command == "render":
        return render.render(
            args.filename,
            namespace=args.namespace,
            dag_id=args.dag_id,
            task_id=args.task_id,
            run_id=args.run_id,
            try_number=args.try_number,
            map_index=args.map_index,
        )
    command, timeout = cluster_command(args, datetime.datetime.now(datetime.timezone.utc))
    return asyncio.run(_on_cluster(args, command, timeout))


ClusterCommand = Callable[[Cluster], Awaitable[int]]


def cluster_command(
    args: argparse.Namespace, now: datetime.datetime
) -> tuple[ClusterCommand, float | None]:
    """The command to run on the cluster, and how long it may take (None: no limit)."""
    timeout: float | None = args.request_timeout or None
    if args.command == "runs":
        wanted = RunFilter(dag_id=args.dag, task_id=args.task, run_id=args.run, status=args.status)
        return functools.partial(
            runs.show_runs,
            wanted=wanted,
            all_namespaces=args.all_namespaces,
            selector=args.selector,
            now=now,
        ), timeout
    if args.command == "logs":
        tail = args.tail if args.tail is not None and args.tail >= 0 else None
        # A followed log lasts as long as dbt runs.
        limit = None if args.follow else timeout
        return functools.partial(
            logs.show_logs, wanted=args.run, follow=args.follow, tail=tail
        ), limit
    if args.command == "results":
        return functools.partial(results.show_results, wanted=args.run, output=args.output), timeout
    if args.command == "artifacts":
        # A download takes as long as the artifacts are large.
        limit = None if args.download is not None else timeout
        return functools.partial(
            artifacts.show_artifacts, wanted=args.run, download=args.download
        ), limit
    return functools.partial(describe.describe_run, wanted=args.run, now=now), timeout


async def _on_cluster(
    args: argparse.Namespace, command: ClusterCommand, timeout: float | None
) -> int:
    target = resolve(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        environ=os.environ,
    )

    async def connected() -> int:
        async with connect(target) as cluster:
            return await command(cluster)

    try:
        return await asyncio.wait_for(connected(), timeout)
    except asyncio.TimeoutError as e:
        raise CliError(
            f"no answer from the cluster at {target.server or target.context} within "
            f"{timeout:g}s (--request-timeout)"
        ) from e


def build_parser(prog: str = PLUGIN) -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Look at kubedbt runs (one Kubernetes Job per dbt invocation of an Airflow "
        "task) and render them without a cluster.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _cluster_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=description, description=description)
        _cluster_options(sub, suppress=True)
        return sub

    listing = command("runs", "List kubedbt runs, newest first.")
    listing.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list runs in every namespace"
    )
    listing.add_argument("-l", "--selector", help="label selector, as with kubectl get -l")
    listing.add_argument("--dag", help="only runs of this DAG id (exact)")
    listing.add_argument("--task", help="only runs of this task id (exact)")
    listing.add_argument("--run", help="only runs of this Airflow run id (exact)")
    listing.add_argument(
        "--status",
        type=_status,
        metavar="{" + ",".join(RUN_STATUSES) + "}",
        help="only runs in this state",
    )

    log = command("logs", "Print dbt's log from the run's newest pod.")
    log.add_argument("run", help="the run's Job name, or a prefix only one run's name starts with")
    log.add_argument("-f", "--follow", action="store_true", help="keep printing until dbt exits")
    log.add_argument("--tail", type=int, metavar="N", help="only the last N lines (-1: all)")

    result = command("results", "Print the run's results, as the sidecar uploaded them.")
    result.add_argument("run", help="the run's Job name, or a unique prefix of it")
    result.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text: the summary; json: the whole run_results.json",
    )

    stored = command(
        "artifacts",
        "List what the run copied to object storage (artifacts_url), or download it.",
    )
    stored.add_argument("run", help="the run's Job name, or a unique prefix of it")
    stored.add_argument(
        "--download",
        type=Path,
        metavar="DIR",
        help="write the artifacts into DIR as dbt wrote them (usable as --state)",
    )

    described = command("describe", "Explain how a run ended, as the operator classifies it.")
    described.add_argument("run", help="the run's Job name, or a unique prefix of it")

    rendered = command("render", "Print a run's Job and ConfigMap as YAML, without a cluster.")
    rendered.add_argument(
        "-f",
        "--filename",
        required=True,
        help="YAML mapping of DbtRunSpec parameters (the operator's names); - for stdin",
    )
    rendered.add_argument("--dag-id", help="default: dag")
    rendered.add_argument("--task-id", help="default: task")
    rendered.add_argument("--run-id", help="default: manual__render")
    rendered.add_argument("--try-number", type=int, help="default: 1")
    rendered.add_argument("--map-index", type=int, help="default: -1 (not mapped)")
    return parser


def _cluster_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Subcommands repeat the options with SUPPRESS defaults, so a value given before the
    # subcommand is not reset by the subcommand's parser.
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("cluster options")
    group.add_argument(
        "-n", "--namespace", default=default(None), help="default: the context's namespace"
    )
    group.add_argument("--context", default=default(None), help="kubeconfig context to use")
    group.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config)",
    )
    group.add_argument(
        "--request-timeout",
        type=_seconds,
        default=default(DEFAULT_REQUEST_TIMEOUT),
        metavar="SECONDS",
        help=f"give up after this long (default {DEFAULT_REQUEST_TIMEOUT:g}; 0: never)",
    )


def _status(value: str) -> RunStatus:
    for status in RUN_STATUSES:
        if value.lower() == status.lower():
            return status
    raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(RUN_STATUSES)}")


def _seconds(value: str) -> float:
    try:
        seconds = float(value.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return seconds
