"""API errors as kubedbt lets them out: the status and who refused, never what was submitted.

kubernetes_asyncio's ApiException carries the response's headers and body, and str() prints
both. The API server's Status body can echo what was submitted: a 422 Invalid repeats field
values (env values, say), an admission webhook's or policy's message may repeat anything. So
RunClient re-raises every failed request as a KubeApiError: still an ApiException, with the
`.status` callers branch on, but holding only

- the HTTP status and reason phrase;
- the Status's reason and details: kind, group, name and, for Invalid, each cause's field path
  and type (never a cause's message: it quotes the value);
- the admission policy or webhook that refused, by name;
- the Status message only for 401, 403, 404, 409, 410 and 429, which name the user, verb,
  resource, policy or conflict a platform engineer needs; there the literal env values (and dbt
  vars) of the submitted object, and every value of a submitted Secret (the rendered profile,
  and each password, token or key in it), are redacted and the length capped. A 400, 422
  or 5xx message may repeat the input and is withheld.

No headers and no body are kept (Retry-After excepted, for the retry policy), and the raw error
is dropped, never chained: tracebacks print the chain. The client's own DEBUG line that prints
every response body (a created Job with its env values, a Status repeating them) is dropped too.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

import yaml
from kubernetes_asyncio.client import ApiException

from kubedbt.core.errors import shorten
from kubedbt.core.render import DBT_ENV_DEFAULTS

# Statuses whose message names who was refused what; the others may echo the request.
MESSAGE_KEPT: Final = frozenset({401, 403, 404, 409, 410, 429})
MESSAGE_CHARS: Final = 400
WITHHELD: Final = "(message withheld: it may repeat submitted values)"
# Shorter values are not worth redacting: "***" for every "1" would garble the message.
MIN_SECRET_CHARS: Final = 4
MAX_CAUSES: Final = 5
_IDENTIFIER: Final = re.compile(r"[A-Za-z]{1,64}")
_OBJECT_PART: Final = re.compile(r"[A-Za-z0-9._:@-]{1,253}")
_NAME: Final = r"([a-z0-9][a-z0-9.-]{0,252})"
# Who refused, as the API server words it; a name is a DNS subdomain, so nothing else is taken.
_REFUSERS: Final = (
    (
        re.compile(rf"ValidatingAdmissionPolicy '{_NAME}' with binding '{_NAME}'"),
        "refused by ValidatingAdmissionPolicy '{}' with binding '{}'",
    ),
    (re.compile(rf'admission webhook "{_NAME}" denied'), 'refused by admission webhook "{}"'),
    (re.compile(rf'failed calling webhook "{_NAME}"'), 'calling admission webhook "{}" failed'),
)
_VARS_FLAGS: Final = frozenset({"--vars", "--args"})
_SECRET_KEY: Final = re.compile(r"pass|token|secret|key|credential|auth", re.IGNORECASE)
Redact = Callable[[str], str]


class _NoResponseBodies(logging.Filter):
    """Drops kubernetes_asyncio's `response body: ...` DEBUG records, whoever logs at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("response body")


def _quiet_response_bodies() -> None:
    rest_log = logging.getLogger("kubernetes_asyncio.client.rest")
    if not any(type(f).__name__ == _NoResponseBodies.__name__ for f in rest_log.filters):
        rest_log.addFilter(_NoResponseBodies())


_quiet_response_bodies()


class KubeApiError(ApiException):  # type: ignore[misc]  # the client ships no type information
    """A failed API request, sanitized: see the module docstring for what it keeps."""

    def __init__(
        self, status: int | None, reason: str | None, text: str, retry_after: str | None = None
    ) -> None:
        super().__init__(status=status, reason=reason)
        self.text = text
        # retry.retry_after reads the headers; nothing else of them is kept.
        self.headers = {"Retry-After": retry_after} if retry_after else None
        self.body = None

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"KubeApiError({self.text!r})"


def sanitized(error: ApiException, secrets: Iterable[str] = ()) -> KubeApiError:
    """`error` as a KubeApiError; one that is sanitized already is returned as it is."""
    if isinstance(error, KubeApiError):
        return error
    headers = getattr(error, "headers", None) or {}
    retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
    return from_response(
        error.status,
        error.reason,
        getattr(error, "body", None),
        secrets,
        retry_after=str(retry_after) if retry_after is not None else None,
    )


def from_response(
    status: Any,
    reason: Any,
    body: Any,
    secrets: Iterable[str] = (),
    *,
    retry_after: str | None = None,
) -> KubeApiError:
    """The KubeApiError of a response's status line and body (bytes, text or a Status dict)."""
    code = status if isinstance(status, int) else None
    redact = _redactor(secrets)
    phrase = _phrase(code, reason, redact)
    head = " ".join(str(part) for part in (code, phrase) if part)
    what = _summary(code, _status_of(body), _text_of(body), redact)
    text = ": ".join(part for part in (head, what) if part) or "API error"
    return KubeApiError(code, phrase or None, text, retry_after)


def from_status_event(status: Mapping[str, Any]) -> KubeApiError:
    """The KubeApiError of a watch's ERROR event (a Status object: 410 Gone, mostly)."""
    code = status.get("code")
    return from_response(code, None, dict(status))


def submitted_secrets(*bodies: Any) -> list[str]:
    """Values in request bodies that must never be repeated: env values, dbt vars, Secret data.

    Found anywhere in the bodies (every container of a Job or pod template), longest first.
    """
    found: set[str] = set()
    stack: list[tuple[Any, int]] = [(body, 0) for body in bodies]
    while stack:
        node, depth = stack.pop()
        if depth > 32:
            continue
        if isinstance(node, Mapping):
            if node.get("kind") == "Secret":
                found.update(_secret_literals(node))
            for key, value in node.items():
                if key == "env" and isinstance(value, list):
                    found.update(_env_literals(value))
                elif key in ("args", "command") and isinstance(value, list):
                    found.update(_vars_literals(value))
                stack.append((value, depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((item, depth + 1) for item in node)
    return sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)


def describe(error: BaseException) -> str:
    """One line about any error, fit for a log line, a trigger event or XCom."""
    if isinstance(error, ApiException):
        return f"{KubeApiError.__name__}: {sanitized(error)}"
    # str(), never repr(): aiohttp's ClientResponseError repr holds the request's headers.
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {shorten(text, 500)}" if text else type(error).__name__


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each of `secrets` (as is, or JSON-escaped) replaced by ***."""
    return _redactor(secrets)(text)


# --- the pieces ---


def _summary(code: int | None, status: Mapping[str, Any], plain: str, redact: Redact) -> str:
    """What follows the status line: [Status reason, object, causes, refuser] message."""
    message = status.get("message") if status else plain
    message = " ".join(str(message).split()) if message else ""
    kept = code in MESSAGE_KEPT
    facts = _facts(status, "" if kept else message, redact)
    if kept:
        shown = shorten(redact(message), MESSAGE_CHARS) if message else ""
    else:
        shown = WITHHELD if message else ""
    bracket = f"[{'; '.join(facts)}]" if facts else ""
    return " ".join(part for part in (bracket, shown) if part)


def _facts(status: Mapping[str, Any], message: str, redact: Redact) -> list[str]:
    facts: list[str] = []
    what = " ".join(
        part
        for part in (_identifier(status.get("reason")), _object(status.get("details"), redact))
        if part
    )
    if what:
        facts.append(what)
    facts.extend(_causes(status.get("details"), redact))
    for pattern, wording in _REFUSERS:
        found = pattern.search(message)
        if found:
            facts.append(redact(wording.format(*found.groups())))
    return facts


def _object(details: Any, redact: Redact) -> str:
    if not isinstance(details, Mapping):
        return ""
    kind = _matching(_OBJECT_PART, details.get("kind"))
    group = _matching(_OBJECT_PART, details.get("group"))
    name = _matching(_OBJECT_PART, details.get("name"))
    resource = ".".join(part for part in (kind, group) if part)
    return redact("/".join(part for part in (resource, name) if part))


def _causes(details: Any, redact: Redact) -> list[str]:
    causes = details.get("causes") if isinstance(details, Mapping) else None
    if not isinstance(causes, list):
        return []
    described = []
    for cause in causes:
        if not isinstance(cause, Mapping):
            continue
        field = cause.get("field")
        field_text = shorten(redact(" ".join(str(field).split())), 120) if field else ""
        kind = _identifier(cause.get("reason"))
        text = ": ".join(part for part in (field_text, kind) if part)
        if text:
            described.append(text)
    if len(described) > MAX_CAUSES:
        more = len(described) - MAX_CAUSES
        described = [*described[:MAX_CAUSES], f"{more} more causes"]
    return described


def _identifier(value: Any) -> str:
    return _matching(_IDENTIFIER, value)


def _matching(pattern: re.Pattern[str], value: Any) -> str:
    return value if isinstance(value, str) and pattern.fullmatch(value) else ""


def _phrase(code: int | None, reason: Any, redact: Redact) -> str:
    if isinstance(reason, str) and reason.strip():
        return shorten(redact(" ".join(reason.split())), 80)
    try:
        return HTTPStatus(code).phrase if code is not None else ""
    except ValueError:
        return ""


def _status_of(body: Any) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    text = _decoded(body)
    if not text.lstrip().startswith("{"):
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _text_of(body: Any) -> str:
    """A body that is not a Status (a proxy's plain text), to stand in for its message."""
    text = _decoded(body)
    return "" if text.lstrip().startswith("{") else text


def _decoded(body: Any) -> str:
    if isinstance(body, (bytes, bytearray)):
        return bytes(body).decode("utf-8", errors="replace")
    return body if isinstance(body, str) else ""


def _redactor(secrets: Iterable[str]) -> Redact:
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < MIN_SECRET_CHARS:
            continue
        forms.add(secret)
        forms.add(json.dumps(secret)[1:-1])  # as quoted in a JSON or Go string
        forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    ordered = sorted(forms, key=len, reverse=True)

    def apply(text: str) -> str:
        for form in ordered:
            text = text.replace(form, "***")
        return text

    return apply


def _env_literals(env: list[Any]) -> Iterable[str]:
    for entry in env:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("value"), str):
            continue
        name, value = entry.get("name"), entry["value"]
        if DBT_ENV_DEFAULTS.get(str(name)) != value:
            yield value


def _secret_literals(secret: Mapping[str, Any]) -> Iterable[str]:
    """Each value of a Secret's stringData and data, whole and every scalar of it as YAML."""
    texts: list[str] = []
    for _, value in _string_items(secret.get("stringData")):
        # The API server stores stringData as data: a message may quote it base64-encoded.
        texts += [value, base64.b64encode(value.encode()).decode()]
    for _, encoded in _string_items(secret.get("data")):
        texts.append(encoded)
        try:
            texts.append(base64.b64decode(encoded, validate=True).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
    for text in texts:
        yield text
        yield " ".join(text.split())  # as a message folded onto one line shows it
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        for scalar in _secret_scalars(parsed, secret=False):
            yield scalar
            # A multi-line value (a private key) may be quoted one line at a time.
            yield from (line.strip() for line in scalar.splitlines() if "\n" in scalar)


def _secret_scalars(node: Any, *, secret: bool) -> Iterable[str]:
    """The scalars whose own key names a secret (password, token, private_key...).

    Not every scalar: redacting "postgres" or a port would garble messages naming the run. Only
    the nearest key is judged (a list's items share it): a dbt target named "snowflake_keypair"
    holds a host and a port, not secrets. The whole file, as stored and folded onto one line,
    is redacted besides (_secret_literals).
    """
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _secret_scalars(value, secret=bool(_SECRET_KEY.search(str(key))))
    elif isinstance(node, list):
        for item in node:
            yield from _secret_scalars(item, secret=secret)
    elif secret and isinstance(node, (str, int, float)) and not isinstance(node, bool):
        yield str(node)


def _string_items(values: Any) -> Iterable[tuple[str, str]]:
    if isinstance(values, Mapping):
        yield from ((str(k), v) for k, v in values.items() if isinstance(v, str))


def _vars_literals(args: list[Any]) -> Iterable[str]:
    for flag, text in itertools.pairwise(args):
        if flag not in _VARS_FLAGS or not isinstance(text, str):
            continue
        yield text
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        yield from _scalars(parsed)


def _scalars(node: Any) -> Iterable[str]:
    if isinstance(node, Mapping):
        for value in node.values():
            yield from _scalars(value)
    elif isinstance(node, list):
        for item in node:
            yield from _scalars(item)
    elif isinstance(node, (str, int, float)) and not isinstance(node, bool):
        yield str(node)
