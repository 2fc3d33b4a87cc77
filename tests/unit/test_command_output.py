"""docs generate, debug, clone and show, run by real dbt with the arguments kubedbt renders.

Each run is dbt 1.11 (.venv-dbt) given exactly `dbt_args(spec)`, kubedbt's emptyDir paths moved
under a temporary directory, on a copy of the example project whose warehouse `dbt build` filled
first. What the results uploader makes of what dbt wrote is then read back as a consumer reads it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubedbt import DbtRunSpec
from kubedbt.core import command_output, packing, results
from kubedbt.core.classify import Evidence, classify
from kubedbt.core.command import LOG_PATH, TARGET_PATH, dbt_args
from kubedbt.core.errors import shorten
from kubedbt.core.json_stream import json_members
from kubedbt.core.report import summary_lines
from kubedbt.io.uploader import UploadTarget, read_and_pack
from tests.unit.dbt_runs import (
    DBT,
    DbtRun,
    copy_example,
    invoke,
    load_with_dbt,
    run_in_dbt_python,
)
from tests.unit.packed import configmap, round_trip
from tests.unit.test_classify import recorded

# A password the failing debug run is given: it must not come back in anything reported.
PASSWORD = "not-a-real-password-4711"
# 60 columns of 200 rows: more than a preview keeps of either.
WIDE = "select " + ", ".join(f"range * {i} as c{i}" for i in range(60)) + " from range(200)"


@dataclass(frozen=True)
class Shop:
    """The example project and its warehouse, built once; what `dbt build` left is the state."""

    project: Path
    base: Path

    @property
    def state(self) -> Path:
        return self.base / "target"

    def spec(self, command: str, **values: Any) -> DbtRunSpec:
        return DbtRunSpec(
            command=command,
            image="kubedbt/dbt:dev",
            project_dir=str(self.project),
            profiles_dir=str(self.project / "profiles"),
            **values,
        )

    def run(self, name: str, spec: DbtRunSpec, **env: str) -> DbtRun:
        """dbt given kubedbt's arguments for `spec`, writing under base/name."""
        where = self.base / name
        moved = {TARGET_PATH: str(where / "target"), LOG_PATH: str(where / "logs")}
        environment = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.base),
            "DBT_DUCKDB_PATH": str(self.base / "warehouse.duckdb"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            **env,
        }
        completed = subprocess.run(
            [str(DBT), *(moved.get(arg, arg) for arg in dbt_args(spec))],
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        logs = where / "logs" / "dbt.log"
        return DbtRun(name, completed.returncode, where / "target", logs, completed.stdout)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    base = tmp_path_factory.mktemp("commands")
    project = copy_example(base)
    # A second target on the same warehouse, to clone into.
    profiles = project / "profiles" / "profiles.yml"
    document = yaml.safe_load(profiles.read_text())
    outputs = document["jaffle_shop"]["outputs"]
    outputs["dev"] = {**outputs["duckdb"], "schema": "dev"}
    profiles.write_text(yaml.safe_dump(document))
    built = invoke(project, base, "build")
    assert built.exit_code == 0, built.stdout[-2000:]
    return Shop(project, base)


@pytest.fixture(scope="module")
def runs(shop: Shop) -> dict[str, DbtRun]:
    postgres = {
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": "1",  # nothing listens there
        "POSTGRES_USER": "dbt",
        "POSTGRES_PASSWORD": PASSWORD,
        "POSTGRES_DB": "warehouse",
    }
    return {
        "docs": shop.run("docs", shop.spec("docs generate")),
        "show": shop.run("show", shop.spec("show", select="customers")),
        "inline": shop.run(
            "inline",
            shop.spec(
                "show",
                inline="select * from {{ ref('orders') }} order by order_id",
                dbt_flags=["--limit", "3"],
            ),
        ),
        "wide": shop.run("wide", shop.spec("show", inline=WIDE, dbt_flags=["--limit", "100"])),
        "debug": shop.run("debug", shop.spec("debug")),
        "debug_closed": shop.run("debug_closed", shop.spec("debug", target="postgres"), **postgres),
        "clone": shop.run("clone", shop.spec("clone", state=str(shop.state), target="dev")),
    }


def test_exit_codes_follow_dbt(runs: dict[str, DbtRun]) -> None:
    codes = {name: run.exit_code for name, run in runs.items()}
    expected = dict.fromkeys(runs, 0) | {"debug_closed": 1}
    assert codes == expected, {name: run.stdout[-2000:] for name, run in runs.items()}


def _decoded(run: DbtRun) -> results.RunResults:
    return round_trip(run.target_path, run.log_file)


def _dbt_catalog_load(*paths: Path) -> list[int]:
    """How many nodes dbt's own catalog loader (what `dbt docs serve` reads) finds in each."""
    script = (
        "import json, sys\n"
        "import jsonschema\n"
        "from dbt.artifacts.schemas.catalog import CatalogArtifact\n"
        "counts = []\n"
        "for path in sys.argv[1:]:\n"
        "    jsonschema.validate(json.load(open(path)), CatalogArtifact.json_schema())\n"
        "    counts.append(len(CatalogArtifact.read_and_check_versions(path).nodes))\n"
        "print(json.dumps(counts))\n"
    )
    return run_in_dbt_python(script, *paths)


def test_docs_generate_keeps_and_counts_the_catalog(
    runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    run = runs["docs"]
    written = json.loads((run.target_path / "catalog.json").read_text())
    decoded = _decoded(run)
    assert (decoded.status, decoded.upload_error) == ("uploaded", None)
    assert decoded.catalog == written
    summary = decoded.summary
    assert summary is not None
    assert summary["command"] == "docs generate"
    columns = sum(len(t["columns"]) for t in [*written["nodes"].values()])
    columns += sum(len(t["columns"]) for t in written["sources"].values())
    # The three seeds and five models `dbt build` made, all in the warehouse.
    assert summary["catalog"] == {
        "nodes": 8,
        "sources": len(written["sources"]),
        "columns": columns,
        "errors": [],
        "errors_omitted": 0,
    }
    assert summary["dropped"] == []
    assert f"Catalog: 8 nodes, 1 source, {columns} columns" in summary_lines(summary)
    # Its run_results are the compile results of every node, as dbt's loader reads them.
    assert decoded.run_results is not None
    (tmp_path / "run_results.json").write_text(json.dumps(decoded.run_results))
    assert load_with_dbt(tmp_path / "run_results.json") == [len(decoded.run_results["results"])]


def _packed_catalog(run: DbtRun, ceiling: int) -> tuple[bytes | None, packing.Reported]:
    with (run.target_path / "catalog.json").open() as stream:
        members = json_members(stream, objects=packing.CATALOG_OBJECTS)
        return packing.pack_catalog(members, ceiling)


def _unpacked_catalog(blob: bytes) -> dict[str, Any]:
    """A packed catalog read back by the ConfigMap's reader."""
    stored = configmap({}, {results.CATALOG_KEY: base64.b64encode(blob).decode()}, "uploaded")
    decoded = results.decode(stored)
    assert decoded.catalog is not None, decoded.upload_error
    return decoded.catalog


def test_a_catalog_too_large_loses_its_stats_then_itself(
    runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    run = runs["docs"]
    whole, reported = _packed_catalog(run, 1 << 30)
    assert whole is not None
    assert reported.catalog_dropped == ()
    no_stats, reported = _packed_catalog(run, len(whole) - 1)
    assert no_stats is not None
    assert reported.catalog_dropped == ("catalog:stats",)
    gone, reported = _packed_catalog(run, len(no_stats) - 1)
    assert gone is None
    assert reported.catalog_dropped == ("catalog:stats", "catalog")
    assert reported.catalog is not None
    assert reported.catalog["nodes"] == 8  # counted all the same
    written = json.loads((run.target_path / "catalog.json").read_text())
    assert _unpacked_catalog(whole) == written
    files = []
    for name, blob in (("whole", whole), ("no_stats", no_stats)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(_unpacked_catalog(blob)))
    assert _dbt_catalog_load(*files) == [8, 8]


REDUCED = ["compiled_code", "long_messages", "timing", "successful_results", "run_results"]


@pytest.mark.parametrize(
    ("room", "dropped", "kept"),
    [
        # Bytes of payload allowed: the summary (1.3 kB) always goes in; the catalog (1 kB) has
        # half of the room at most, the run_results what is left.
        (0, [*REDUCED, "catalog:stats", "catalog"], []),
        (1500, [*REDUCED, "catalog:stats", "catalog"], []),
        (3000, REDUCED, [results.CATALOG_KEY]),
        (40000, [], [results.RUN_RESULTS_KEY, results.CATALOG_KEY]),
    ],
)
def test_the_catalog_gives_way_within_the_limit(
    runs: dict[str, DbtRun], room: int, dropped: list[str], kept: list[str]
) -> None:
    run = runs["docs"]
    target = UploadTarget("ns", "cm", run.target_path, run.log_file)
    data, binary, status = read_and_pack(target, limit=results.METADATA_RESERVE + room)
    assert (status, sorted(binary)) == ("uploaded", sorted(kept))
    if room:
        assert results.payload_size(data, binary) <= room
    decoded = results.decode(configmap(data, binary, status))
    assert decoded.summary is not None
    assert decoded.summary["dropped"] == dropped
    # Counted whatever is kept.
    assert decoded.summary["catalog"] is not None
    assert decoded.summary["catalog"]["nodes"] == 8
    if dropped:
        lines = summary_lines(decoded.summary)
        assert lines[-1] == f"(left out of the stored results to fit: {', '.join(dropped)})"


def _printed(stdout: str) -> list[dict[str, Any]]:
    """The rows `dbt show --output json` printed on stdout (after its log lines)."""
    document, _ = json.JSONDecoder().raw_decode(stdout[stdout.index("\n{") + 1 :])
    rows: list[dict[str, Any]] = document["show"]
    return rows


@pytest.mark.parametrize(
    ("name", "unique_id", "count"),
    [
        ("show", "model.jaffle_shop.customers", 5),  # dbt's default --limit
        ("inline", "sql_operation.jaffle_shop.inline_query", 3),
    ],
)
def test_show_reports_the_rows_dbt_printed(
    runs: dict[str, DbtRun], tmp_path: Path, name: str, unique_id: str, count: int
) -> None:
    run = runs[name]
    printed = _printed(run.stdout)
    assert len(printed) == count
    decoded = _decoded(run)
    summary = decoded.summary
    assert summary is not None
    assert summary["command"] == "show"
    assert summary["previews"] == [
        {
            "unique_id": unique_id,
            "columns": list(printed[0]),
            "rows": printed,
            "rows_omitted": 0,
            "columns_omitted": 0,
        }
    ]
    lines = summary_lines(summary)
    start = lines.index(f"Preview of {unique_id} ({count} rows):")
    header = [cell.strip() for cell in lines[start + 1].strip(" |").split("|")]
    assert header == list(printed[0])
    first = [cell.strip() for cell in lines[start + 3].strip(" |").split("|")]
    assert first == [v if isinstance(v, str) else json.dumps(v) for v in printed[0].values()]
    assert decoded.run_results is not None
    (tmp_path / "run_results.json").write_text(json.dumps(decoded.run_results))
    assert load_with_dbt(tmp_path / "run_results.json") == [len(decoded.run_results["results"])]


def test_the_inline_query_reaches_dbt_with_its_jinja(runs: dict[str, DbtRun]) -> None:
    # Jinja is dbt's: {{ ref('orders') }} became the relation, and --limit applied.
    printed = _printed(runs["inline"].stdout)
    assert [row["order_id"] for row in printed] == [1, 2, 3]


def test_a_large_preview_is_cut_and_says_so(runs: dict[str, DbtRun]) -> None:
    printed = _printed(runs["wide"].stdout)
    assert (len(printed), len(printed[0])) == (100, 60)
    summary = _decoded(runs["wide"]).summary
    assert summary is not None
    (preview,) = summary["previews"]
    columns = [f"c{i}" for i in range(command_output.MAX_PREVIEW_COLUMNS)]
    assert preview["columns"] == columns
    assert preview["columns_omitted"] == 60 - len(columns)
    kept = len(preview["rows"])
    assert 0 < kept < command_output.MAX_PREVIEW_ROWS
    assert preview["rows"] == [{c: row[c] for c in columns} for row in printed[:kept]]
    assert preview["rows_omitted"] == 100 - kept
    assert len(json.dumps(preview["rows"])) <= command_output.PREVIEW_CHARS
    lines = summary_lines(summary)
    assert f"  ... and {100 - kept} more rows, not kept" in lines
    assert f"  ... and {60 - len(columns)} more columns, not kept" in lines


def test_debug_checks_the_connection_and_writes_no_artifact(runs: dict[str, DbtRun]) -> None:
    run = runs["debug"]
    assert not run.target_path.exists()
    # --connection: the project and profile are loaded, git is not looked for.
    assert "Connection test: [OK connection ok]" in run.stdout
    assert "Required dependencies" not in run.stdout
    decoded = _decoded(run)
    assert (decoded.status, decoded.run_results, decoded.log_events) == ("uploaded", None, [])
    summary = decoded.summary
    assert summary is not None
    assert (summary["command"], summary["nodes"]) == ("debug", 0)
    assert summary["debug"] == {"passed": True, "failed": []}
    first_event = json.loads(run.log_file.read_text().splitlines()[0])
    assert summary["invocation_id"] == first_event["info"]["invocation_id"]
    assert summary["dbt_version"] == "1.11.16"
    assert summary["elapsed_time"] is not None
    assert summary_lines(summary) == [
        f"dbt debug finished in {summary['elapsed_time']:.1f}s: all checks passed"
    ]


def test_a_closed_port_fails_debug_with_dbts_reason(runs: dict[str, DbtRun]) -> None:
    run = runs["debug_closed"]
    data, binary, status = read_and_pack(UploadTarget("ns", "cm", run.target_path, run.log_file))
    assert PASSWORD not in json.dumps([data, binary])
    decoded = results.decode(configmap(data, binary, status))
    summary = decoded.summary
    assert summary is not None
    assert summary["debug"] is not None
    (failed,) = summary["debug"]["failed"]
    assert failed.startswith("dbt was unable to connect to the specified database.")
    assert 'connection to server at "127.0.0.1", port 1 failed: Connection refused' in failed
    # The check, logged at info level, is in the digest as its error, with dbt's own code.
    assert decoded.log_events == [
        {"code": "Z048", "name": "DebugCmdResult", "message": failed, "node": None}
    ]
    lines = summary_lines(summary)
    assert lines[0].endswith(": 1 check failed")
    assert lines[1:3] == [
        "Failed checks:",
        "  dbt was unable to connect to the specified database.",
    ]
    # The pod of a run dbt ended with exit code 1, with these results: the warehouse is down.
    pods = recorded("model_error")["pods"]
    outcome = classify(Evidence(job=recorded("model_error")["job"], pods=pods, results=decoded))
    assert (outcome.kind, outcome.retryable) == ("warehouse_unreachable", True)
    assert "Connection refused" in outcome.reason


def test_clone_makes_the_states_relations_in_its_own_schema(
    shop: Shop, runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    decoded = _decoded(runs["clone"])
    summary = decoded.summary
    assert summary is not None
    assert (summary["command"], summary["counts"]) == ("clone", {"success": 8})
    assert decoded.run_results is not None
    (tmp_path / "run_results.json").write_text(json.dumps(decoded.run_results))
    assert load_with_dbt(tmp_path / "run_results.json") == [8]
    # What the clone made in schema dev reads what `dbt build` made in main.
    # DuckDB cannot clone a table: each of the eight relations is a view of main's.
    query = (
        "select (select count(*) from dev.customers) as dev,"
        " (select count(*) from customers) as main,"
        " (select count(*) from information_schema.tables"
        "  where table_schema = 'dev' and table_type = 'VIEW') as views"
    )
    check = shop.run("check_clone", shop.spec("show", inline=query))
    assert check.exit_code == 0, check.stdout[-2000:]
    (row,) = _printed(check.stdout)
    assert row["dev"] == row["main"] > 0
    assert row["views"] == 8


def _show_event(run: DbtRun) -> dict[str, Any]:
    (line,) = [line for line in run.log_file.read_text().splitlines() if '"ShowNode"' in line]
    event: dict[str, Any] = json.loads(line)
    return event


def test_a_show_line_too_large_to_read_is_omitted_and_said(
    runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    # `dbt show --limit 100000`: dbt's real ShowNode event, its rows repeated past 1 MiB.
    run = runs["show"]
    event = _show_event(run)
    rows = json.loads(event["data"]["preview"])
    copies = command_output.SHOW_LINE_CHARS // len(event["data"]["preview"]) + 1
    event["data"]["preview"] = json.dumps(rows * copies)
    huge = json.dumps(event)
    assert len(huge) > command_output.SHOW_LINE_CHARS
    log = tmp_path / "dbt.log"
    lines = run.log_file.read_text().splitlines(keepends=True)
    log.write_text("".join(huge + "\n" if '"ShowNode"' in line else line for line in lines))

    # The uploader's reader never holds more than the bound of it.
    stream = _Reads(log.read_bytes())
    read = list(command_output.log_lines(stream))
    assert read.count(command_output.UNREAD_SHOW) == 1
    assert not any("ShowNode" in line for line in read if line != command_output.UNREAD_SHOW)
    assert len(read) == len(lines)
    assert max(stream.sizes) == command_output.SHOW_LINE_CHARS + 1

    data, binary, status = read_and_pack(UploadTarget("ns", "cm", run.target_path, log))
    summary = results.decode(configmap(data, binary, status)).summary
    assert summary is not None
    assert (summary["command"], summary["previews"], summary["previews_omitted"]) == ("show", [], 1)
    assert summary["dropped"] == ["show previews over 1 MiB"]
    lines_said = summary_lines(summary)
    assert "(and 1 more previews, not kept)" in lines_said
    assert "(left out of the stored results to fit: show previews over 1 MiB)" in lines_said
    # The same line, given whole: skipped before it is parsed.
    report = command_output.read_log([huge])
    assert (report.previews, report.previews_omitted, report.previews_too_large) == ([], 1, 1)


class _Reads(io.BytesIO):
    """A file whose reads are recorded: how much each line read returned."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def readline(self, size: int | None = -1, /) -> bytes:
        line = super().readline(size)
        self.sizes.append(len(line))
        return line


def test_log_lines_keep_other_long_lines_whole() -> None:
    # An error event (data first, as dbt writes it) whose message alone is past the bound.
    long = json.dumps(
        {"data": {"exc": "é" * 2_000_000}, "info": {"name": "MainEncounteredError"}},
        ensure_ascii=False,
    )
    text = f"short\n{long}\nlast"
    lines = list(command_output.log_lines(io.BytesIO(text.encode())))
    assert lines == ["short\n", f"{long}\n", "last"]


def test_long_column_names_are_shortened_like_values(runs: dict[str, DbtRun]) -> None:
    data = _show_event(runs["show"])["data"]
    rows = json.loads(data["preview"])
    first = next(iter(rows[0]))
    alias = "a" * 100_000
    renamed = [{(alias if k == first else k): v for k, v in row.items()} for row in rows]
    shown = command_output.preview({**data, "preview": json.dumps(renamed)})
    assert shown is not None
    name = shorten(alias, command_output.VALUE_CHARS)
    assert shown["columns"][0] == name
    assert [row[name] for row in shown["rows"]] == [row[first] for row in rows]
    assert len(json.dumps(shown)) < command_output.PREVIEW_CHARS


def test_a_profile_value_a_debug_check_quotes_is_hidden() -> None:
    # dbt 1.11, `dbt debug --connection` with `password: 987654321` (an int) in the profile.
    log = Path(__file__).parent / "fixtures/misconfig/debug_password_not_a_string/dbt.log"
    assert "987654321" in log.read_text()
    with log.open("rb") as stream:
        events, report = results.read_dbt_log(command_output.log_lines(stream))
    assert report.debug is not None
    (failed,) = report.debug["failed"]
    assert "invalid: <value hidden> is not of type 'string'" in failed
    assert "987654321" not in json.dumps([events, report.debug])
    assert [e["message"] for e in events if e["name"] == "DebugCmdResult"] == [failed]
