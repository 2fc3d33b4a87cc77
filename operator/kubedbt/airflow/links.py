"""The task's extra links: its Kubernetes Job, its artifacts, the dbt docs site.

Airflow 3 evaluates each link on the worker when the task ends and stores it in XCom
(`_link_<class name>`), so the links read what the operator learnt about its run. A link with
nothing to point at is the empty string, which the UI shows disabled.

The URL templates are str.format templates checked when the DAG is parsed: a Job link names
{namespace} and {job_name} (a Kubernetes dashboard, Lens, a log search), an artifacts link
{url}, {bucket} and {prefix} (a console for an S3-compatible store that has no standard one).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

from kubedbt.core.artifacts import console_url
from kubedbt.core.errors import InvalidSpecError

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

JOB_FIELDS: Final = frozenset({"namespace", "job_name"})
ARTIFACTS_FIELDS: Final = frozenset({"url", "bucket", "prefix"})


def url_template(parameter: str, value: object, fields: frozenset[str]) -> str | None:
    """A link template naming only `fields`, or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidSpecError(parameter, f"expected a string, got {type(value).__name__}")
    try:
        named = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as e:
        raise InvalidSpecError(parameter, f"not a valid template: {e}") from e
    unknown = sorted(named - fields)
    if unknown:
        raise InvalidSpecError(
            parameter, f"unknown placeholders {unknown}; use {', '.join(sorted(fields))}"
        )
    if not value.startswith(("http://", "https://", "{")):
        raise InvalidSpecError(parameter, "must be an http(s) URL")
    return value


def http_url(parameter: str, value: object) -> str | None:
    """An http(s) URL, or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise InvalidSpecError(parameter, "must be an http(s) URL")
    return value


@dataclass
class RunLinks:
    """What the links point at, filled in as the run goes."""

    job_template: str | None = None
    artifacts_template: str | None = None
    docs_url: str | None = None
    job: tuple[str, str] | None = None
    artifacts_url: str | None = None

    def job_link(self) -> str:
        """The Job in the configured dashboard."""
        if self.job_template is None or self.job is None:
            return ""
        job_name, namespace = self.job
        return self.job_template.format(
            namespace=quote(namespace, safe=""), job_name=quote(job_name, safe="")
        )

    def artifacts_link(self) -> str:
        """The run's artifacts folder: the template's console, else the cloud's own."""
        if self.artifacts_url is None:
            return ""
        if self.artifacts_template is not None:
            parts = urlsplit(self.artifacts_url)
            return self.artifacts_template.format(
                url=quote(self.artifacts_url, safe=""),
                bucket=quote(parts.netloc, safe=""),
                prefix=quote(parts.path.lstrip("/")),
            )
        return console_url(self.artifacts_url) or ""


def _links(operator: BaseOperator) -> RunLinks:
    found = getattr(operator, "run_links", None)
    return found if isinstance(found, RunLinks) else RunLinks()


class DbtJobLink(BaseOperatorLink):
    """The run's Kubernetes Job, in the dashboard `job_url_template` names."""

    name = "Kubernetes Job"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The link for this try."""
        return _links(operator).job_link()


class DbtArtifactsLink(BaseOperatorLink):
    """The run's artifacts in object storage."""

    name = "dbt artifacts"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The link for this try."""
        return _links(operator).artifacts_link()


class DbtDocsLink(BaseOperatorLink):
    """The project's dbt docs site (`docs_url`)."""

    name = "dbt docs"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The link for this try."""
        return _links(operator).docs_url or ""


LINKS: Final[tuple[Any, ...]] = (DbtJobLink(), DbtArtifactsLink(), DbtDocsLink())
