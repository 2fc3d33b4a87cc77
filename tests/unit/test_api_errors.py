"""No response body, header or submitted env value leaves kubedbt in an API error or its chain.

The responses are the API server's own, recorded from the local cluster by
tests/unit/record_api_errors.py (RBAC and admission-policy refusals whose message repeats the
Job's env values, a conflict, an invalid label, an admission webhook that cannot be called, a
watch from a compacted version). They are turned into ApiExceptions the way kubernetes_asyncio
does, and served over real HTTP to RunClient, so the real client raises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import RESTResponse
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.airflow import DbtJobOperator
from kubedbt.airflow.events import error_event
from kubedbt.core.errors import RetryableError, TerminalError
from kubedbt.io.api_errors import (
    KubeApiError,
    describe,
    from_response,
    redact,
    sanitized,
    submitted_secrets,
)
from kubedbt.io.kube import RunClient
from kubedbt.io.retry import RetryPolicy, retry_after
from tests.unit.record_api_errors import ENV, SECRET

RECORDED: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "api_errors.json").read_text()
)
REFUSED_CREATES = (
    "forbidden_rbac",
    "forbidden_policy",
    "invalid_policy",
    "invalid_field",
    "webhook_unreachable",
)
ONCE = RetryPolicy(attempts=1, backoff_min=0.01, backoff_max=0.01, deadline=5)
NAMESPACE = "analytics"


class _HttpResponse:
    """What kubernetes_asyncio's RESTResponse reads of aiohttp's ClientResponse."""

    def __init__(self, recorded: dict[str, Any]) -> None:
        self.status = recorded["status"]
        self.reason = recorded["reason"]
        self.headers = CIMultiDictProxy(CIMultiDict(recorded["headers"]))


def _raw(name: str) -> client.ApiException:
    """The ApiException the client raises for the recorded response (rest.py does the same)."""
    recorded = RECORDED[name]
    return client.ApiException(
        http_resp=RESTResponse(_HttpResponse(recorded), recorded["body"].encode())
    )


def _job() -> dict[str, Any]:
    spec = DbtRunSpec(command="build", image="kubedbt/dbt:dev", namespace=NAMESPACE, env_vars=ENV)
    return dict(render_job(spec, RunIdentity("dag", "task", "manual__1")))


def _configmap() -> dict[str, Any]:
    spec = DbtRunSpec(command="build", image="kubedbt/dbt:dev", namespace=NAMESPACE, env_vars=ENV)
    return dict(render_results_configmap(spec, RunIdentity("dag", "task", "manual__1")))


def _never_shown(name: str, *, submitted: bool = True) -> list[str]:
    """What no error text may hold: the raw body, any header value, and the env values of the
    Job if the request `submitted` it (only those can be known to redact)."""
    recorded = RECORDED[name]
    headers = [value for key, value in recorded["headers"].items() if key != "Content-Type"]
    return [*([SECRET] if submitted else []), '"kind":"Status"', "HTTP response", *headers]


def _chain(error: BaseException) -> list[BaseException]:
    """The error and every cause and context below it, shown by a traceback or not."""
    found: list[BaseException] = []
    stack = [error]
    while stack:
        item = stack.pop()
        if any(item is seen for seen in found):
            continue
        found.append(item)
        stack += [e for e in (item.__cause__, item.__context__) if e is not None]
    return found


def _assert_clean(error: BaseException, name: str, *, submitted: bool = True) -> str:
    """Assert nothing of the response leaks through `error`; its traceback text, for more."""
    rendered = "".join(traceback.format_exception(error))
    # Frame lines name kubedbt's files and line numbers, which a short header value (a
    # Content-Length of 344) can match by chance: only what the errors say is checked.
    said = "".join(line for line in rendered.splitlines(True) if not line.startswith("  "))
    for item in _chain(error):
        if isinstance(item, client.ApiException):
            assert isinstance(item, KubeApiError), f"a raw ApiException in the chain: {item!r}"
            assert item.body is None
            assert item.headers is None or set(item.headers) == {"Retry-After"}
        for text in (str(item), repr(item), said):
            for secret in _never_shown(name, submitted=submitted):
                assert secret not in text, f"{secret!r} leaked into {text!r}"
    return rendered


# --- what a sanitized error says ---

EXPECTED = {
    "forbidden_rbac": (
        403,
        [
            "403 Forbidden: [Forbidden jobs.batch] jobs.batch is forbidden: User "
            '"system:serviceaccount:kubedbt-record-',
            'cannot create resource "jobs" in API group "batch"',
        ],
    ),
    "forbidden_policy": (
        403,
        [
            "403 Forbidden: [Forbidden jobs.batch/dbt-record-api-errors-",
            "is forbidden: ValidatingAdmissionPolicy 'kubedbt-record-",
            "denied request: refused; env: false,false,***,***",
        ],
    ),
    "invalid_policy": (
        422,
        [
            "422 Unprocessable Entity: [Invalid jobs.batch/dbt-record-api-errors-",
            "; refused by ValidatingAdmissionPolicy 'kubedbt-record-",
            "] (message withheld: it may repeat submitted values)",
        ],
    ),
    "invalid_field": (
        422,
        [
            "422 Unprocessable Entity: [Invalid Job.batch/dbt-record-api-errors-",
            "; metadata.labels: FieldValueInvalid] (message withheld",
        ],
    ),
    "conflict": (
        409,
        [
            "409 Conflict: [AlreadyExists jobs.batch/dbt-record-api-errors-",
            " already exists",
        ],
    ),
    "not_found": (404, ['404 Not Found: [NotFound jobs.batch/nowhere] jobs.batch "nowhere"']),
    "webhook_unreachable": (
        500,
        [
            '500 Internal Server Error: [InternalError; calling admission webhook "kubedbt-record-',
            '.kubedbt.io" failed] (message withheld',
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_sanitized_error_keeps_the_status_and_who_refused(name: str) -> None:
    status, fragments = EXPECTED[name]
    error = sanitized(_raw(name), submitted_secrets(_job()))
    assert isinstance(error, client.ApiException)
    assert error.status == status
    text = str(error)
    for fragment in fragments:
        assert fragment in text
    assert "\n" not in text
    _assert_clean(error, name)


def test_messages_that_may_echo_input_are_withheld_even_unredacted() -> None:
    # No secrets handed over: the 422 and 500 messages go anyway, the label value with them.
    for name in ("invalid_policy", "invalid_field", "webhook_unreachable"):
        text = str(sanitized(_raw(name)))
        assert SECRET not in text
        assert "no label value" not in text
        assert 'service \\"nowhere\\"' not in text
        assert 'service "nowhere"' not in text
    # A 403's is kept, so only the redaction stands between it and the value.
    assert SECRET in str(sanitized(_raw("forbidden_policy")))


def test_kept_messages_are_capped_and_redacted_in_quoted_forms_too() -> None:
    secret = 'pa"ss\\word-1'
    quoted = json.dumps(secret)  # as a webhook using Go's %q would repeat it
    status = {"message": f"denied: env is {quoted} " + "x" * 1000, "reason": "Forbidden"}
    error = from_response(403, "Forbidden", json.dumps(status).encode(), [secret])
    assert secret not in str(error)
    assert quoted[1:-1] not in str(error)
    assert 'denied: env is "***"' in str(error)
    assert len(str(error)) < 600
    assert redact(f"a {secret} b", [secret]) == "a *** b"


def test_plain_text_bodies() -> None:
    page = b"<html><body>upstream said: password=hunter22</body></html>"
    assert str(from_response(502, "Bad Gateway", page)) == (
        "502 Bad Gateway: (message withheld: it may repeat submitted values)"
    )
    assert str(from_response(403, "Forbidden", b"RBAC: access denied")) == (
        "403 Forbidden: RBAC: access denied"
    )
    assert str(from_response(404, None, b"")) == "404 Not Found"
    assert str(from_response(None, None, {"reason": "Expired"})) == "[Expired]"


def test_only_retry_after_is_kept_of_the_headers() -> None:
    raw = _raw("forbidden_rbac")
    raw.headers = CIMultiDictProxy(CIMultiDict({**RECORDED["forbidden_rbac"]["headers"]}))
    assert sanitized(raw).headers is None
    raw.status = 429
    raw.headers = CIMultiDictProxy(CIMultiDict({"Retry-After": "2", "Audit-Id": "x"}))
    error = sanitized(raw)
    assert error.headers == {"Retry-After": "2"}
    assert retry_after(error) == 2.0


def test_what_counts_as_submitted_secrets() -> None:
    job = _job()
    pod = job["spec"]["template"]["spec"]
    pod["initContainers"] = [{"name": "init", "env": [{"name": "TOKEN", "value": "init-token"}]}]
    dbt = pod["containers"][0]
    dbt["args"] += ["--vars", "{db: {password: vars-secret}, port: 15432, on: true}"]
    found = submitted_secrets((NAMESPACE, job), {"body": None})
    assert set(found) == {
        SECRET,
        "acct-" + SECRET,
        "init-token",
        "vars-secret",
        "15432",
        "{db: {password: vars-secret}, port: 15432, on: true}",
    }
    assert found == sorted(found, key=len, reverse=True)
    assert "false" not in found, "dbt's own env defaults are no secret"


def test_describe_never_uses_repr() -> None:
    info = aiohttp.RequestInfo(
        URL("https://kube:6443/api"),
        "GET",
        CIMultiDictProxy(CIMultiDict({"Authorization": "Bearer a-token"})),
        URL("https://kube:6443/api"),
    )
    error = aiohttp.ClientResponseError(info, (), status=400, message="Bad Request")
    assert "a-token" in repr(error)  # what describe must not use
    assert "a-token" not in describe(error)
    assert describe(_raw("forbidden_policy")).startswith("KubeApiError: 403 Forbidden: ")
    event = error_event("job", NAMESPACE, describe(_raw("invalid_policy")))
    assert SECRET not in json.dumps(event)


# --- through RunClient, the real client and real HTTP ---


@contextlib.asynccontextmanager
async def _replaying(name: str) -> AsyncIterator[RunClient]:
    """A RunClient whose every request gets the recorded response."""
    recorded = RECORDED[name]

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        headers = {
            key: value
            for key, value in recorded["headers"].items()
            if key not in ("Content-Length", "Transfer-Encoding", "Date")
        }
        return web.Response(
            status=recorded["status"],
            reason=recorded["reason"],
            headers=headers,
            body=recorded["body"].encode(),
        )

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", answer)
    async with _serving(app) as api:
        yield RunClient(api, ONCE)


@contextlib.asynccontextmanager
async def _serving(app: web.Application) -> AsyncIterator[client.ApiClient]:
    """An ApiClient talking real HTTP to `app`, served on a free local port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        configuration = client.Configuration(host=f"http://{host}:{port}")
        async with client.ApiClient(configuration) as api:
            yield api
    finally:
        await runner.cleanup()


def _raised(name: str, use: Callable[[RunClient], Awaitable[Any]]) -> BaseException:
    async def scenario() -> None:
        async with _replaying(name) as run_client:
            await use(run_client)

    with pytest.raises((KubeApiError, RetryableError, TerminalError)) as caught:
        asyncio.run(scenario())
    return caught.value


@pytest.mark.parametrize("name", REFUSED_CREATES)
def test_a_refused_run_fails_the_task_with_nothing_of_the_response(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the client logs every response body at DEBUG
    status, fragments = EXPECTED[name]

    async def create_run() -> None:
        async with _replaying(name) as run_client:
            await run_client.create_run(_job(), _configmap())  # type: ignore[arg-type]

    operator = DbtJobOperator(task_id="dbt", command="build", image="kubedbt/dbt:dev")
    with pytest.raises(AirflowException) as caught:
        operator._run_async(create_run())
    error = caught.value
    assert isinstance(error, AirflowFailException) == (status < 500)
    assert str(error).startswith("creating Job analytics/dbt-dag-task-")
    assert all(fragment in str(error) for fragment in fragments)
    assert (error.__cause__, error.__context__) == (None, None)
    rendered = _assert_clean(error, name)
    assert f"failed: {status} " in rendered
    assert SECRET not in caplog.text


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_request_kind_raises_a_sanitized_error(name: str) -> None:
    status = EXPECTED[name][0]
    job = _job()
    calls: dict[str, Callable[[RunClient], Awaitable[Any]]] = {
        "call": lambda c: c.call(c.batch.create_namespaced_job, NAMESPACE, job),
        "call_json": lambda c: c.list_pods(NAMESPACE, {"a": "b"}),
        "watch": lambda c: anext(
            c.watch(c.batch.list_namespaced_job, NAMESPACE, resource_version="1", timeout_seconds=1)
        ),
        "follow_log": lambda c: anext(c.follow_log("pod", NAMESPACE, "dbt")),
    }
    for kind, use in calls.items():
        error = _raised(name, use)
        assert isinstance(error, KubeApiError), (kind, error)
        assert error.status == status, kind
        assert (error.__cause__, error.__context__) == (None, None), kind
        # The recorded answers repeat a Job's env values; only a request that sent that Job
        # knows them (and only such a request can have them repeated).
        _assert_clean(error, name, submitted=kind == "call")


@pytest.mark.parametrize(
    ("name", "wrapped"),
    [("forbidden_rbac", TerminalError), ("webhook_unreachable", RetryableError)],
)
def test_wrapped_errors_hold_only_the_sanitized_one(name: str, wrapped: type[Exception]) -> None:
    error = _raised(name, lambda c: c.read_job("dbt-x", NAMESPACE))
    assert type(error) is wrapped
    assert str(error).startswith(f"reading {NAMESPACE}/dbt-x failed: {EXPECTED[name][0]} ")
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert isinstance(error.__context__, KubeApiError)
    _assert_clean(error, name)


def test_a_log_tail_refused_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    async def tail() -> str | None:
        async with _replaying("forbidden_policy") as run_client:
            return await run_client.log_tail("pod", NAMESPACE, "dbt", 10)

    assert asyncio.run(tail()) is None
    assert "cannot read the log of analytics/pod: 403 Forbidden: [Forbidden" in caplog.text
    assert "Audit-Id" not in caplog.text


def test_a_watch_from_a_compacted_version_raises_410() -> None:
    async def watch(run_client: RunClient) -> Any:
        events = run_client.watch(
            run_client.batch.list_namespaced_job,
            NAMESPACE,
            resource_version="1",
            timeout_seconds=1,
        )
        async with contextlib.aclosing(events):
            return await anext(events)

    error = _raised("watch_expired", watch)
    assert isinstance(error, KubeApiError)
    assert error.status == 410
    assert str(error).startswith("410 Gone: [Expired] too old resource version: 1 (")


def test_a_secret_create_that_landed_before_failing_is_not_waited_out() -> None:
    """The first POST stores the Secret but answers 503; the retry's 409 is that Secret.

    Under the retry policy the 409 would read as an older Job's Secret: a minute's wait, then
    a failed try and a deleted Job.
    """
    posts: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        posts.append(503 if not posts else 409)
        status = {"kind": "Status", "code": posts[-1], "reason": "AlreadyExists"}
        return web.json_response(status, status=posts[-1])

    async def scenario() -> float:
        app = web.Application()
        app.router.add_route("POST", "/api/v1/namespaces/{namespace}/secrets", answer)
        policy = RetryPolicy(attempts=3, backoff_min=0.01, backoff_max=0.01, deadline=5)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "run-profile", "namespace": NAMESPACE},
            "type": "Opaque",
            "stringData": {"profiles.yml": "x: 1"},
        }
        async with _serving(app) as api:
            started = time.monotonic()
            await RunClient(api, policy).ensure_profile_secret(
                secret,  # type: ignore[arg-type]
                "run",
                "uid-1",
                adopted=False,
            )
            return time.monotonic() - started

    took = asyncio.run(scenario())
    assert posts == [503, 409]
    assert took < 5
