"""OpenLineage events checked against the spec vendored in tests/fixtures/openlineage, offline.

The core schema (OpenLineage.json) only says that a facet is an object with `_producer` and
`_schemaURL`; what a facet holds is checked against its own schema, found by its `_schemaURL`.
A facet whose schema is not vendored is an error, not a pass: a check that skips what it does not
know would let any new facet through unchecked. Formats are checked too (`uuid` by jsonschema,
`uri` and `date-time` here), since a malformed runId or eventTime is what consumers reject.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

SPEC_DIR = Path(__file__).parent / "fixtures" / "openlineage"
OPENLINEAGE_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
# RFC 3339's date-time: a date, "T", a time, and a zone (Z or an offset).
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

FORMATS = FormatChecker()


@FORMATS.checks("uri", raises=ValueError)
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats apply to strings only; the type is checked elsewhere
    return bool(_SCHEME.match(urlsplit(value).scheme)) and not any(c.isspace() for c in value)


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(_DATE_TIME.match(value)) and datetime.fromisoformat(value) is not None


def _offline(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)


@functools.cache
def registry() -> Registry[Any]:
    """Every vendored schema under its $id; any other reference fails instead of downloading."""
    resources = []
    for path in sorted(SPEC_DIR.rglob("*.json")):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry(retrieve=_offline).with_resources(resources)


def validate_event(event: Mapping[str, Any]) -> None:
    """Raise ValidationError unless `event` is a valid RunEvent with valid facets."""
    _check({"$ref": f"{OPENLINEAGE_ID}#/$defs/RunEvent"}, event)
    for where, facets in _facets(event):
        for key, facet in facets.items():
            _validate_facet(f"{where}.{key}", key, facet)


def _check(schema: Mapping[str, Any], instance: Any) -> None:
    """Raise the most precise error: the spec's anyOf would otherwise hide which key is wrong."""
    validator = Draft202012Validator(schema, registry=registry(), format_checker=FORMATS)
    error = best_match(validator.iter_errors(instance))
    while error is not None and error.context:
        error = best_match(error.context)
    if error is not None:
        raise error


def _facets(event: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each facets object of an event, with where it is."""
    yield "run.facets", event["run"].get("facets") or {}
    yield "job.facets", event["job"].get("facets") or {}
    for side, extra in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for i, dataset in enumerate(event.get(side) or []):
            yield f"{side}[{i}].facets", dataset.get("facets") or {}
            yield f"{side}[{i}].{extra}", dataset.get(extra) or {}


def _validate_facet(where: str, key: str, facet: Mapping[str, Any]) -> None:
    schema_url = facet["_schemaURL"]
    file_url = schema_url.partition("#")[0]
    try:
        schema = registry().contents(file_url)
    except NoSuchResource:
        raise ValidationError(f"{where}: no vendored schema for {schema_url}") from None
    if file_url == OPENLINEAGE_ID:
        # A custom facet (Airflow's "airflow", "airflowDagRun"...) declares itself an instance of
        # the spec's base facet: it is checked against that, as the spec says to.
        _check({"$ref": schema_url}, facet)
        return
    # A facet file defines the key its facet goes under: "dataSource", "tags", ...
    if key not in schema.get("properties", {}):
        keys = sorted(schema.get("properties", {}))
        raise ValidationError(f"{where}: {file_url} defines facets {keys}, not {key!r}")
    _check({"$ref": file_url}, {key: facet})
    _check({"$ref": schema_url}, facet)
