"""Checks for the Kubernetes value formats a run spec carries.

Each check raises InvalidSpecError naming the parameter, so a DAG author learns at parse time, not
from an API server's 422 halfway through creating a run. The formats follow the Kubernetes API
conventions (DNS-1123 labels and subdomains, qualified names, resource quantities).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from kubedbt.core.errors import InvalidSpecError

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# A resource quantity: a signed decimal number with an optional binary, decimal or exponent suffix.
_QUANTITY = re.compile(
    r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def dns_label(parameter: str, value: object) -> str:
    """A DNS-1123 label: what namespaces and container names must be."""
    text = string(parameter, value)
    if len(text) > 63 or not DNS1123_LABEL.fullmatch(text):
        raise InvalidSpecError(
            parameter,
            f"{text!r} is not a valid name: use at most 63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit",
        )
    return text


def dns_subdomain(parameter: str, value: object) -> str:
    """A DNS-1123 subdomain: what most object names (secrets, service accounts) must be."""
    text = string(parameter, value)
    if len(text) > 253 or not DNS1123_SUBDOMAIN.fullmatch(text):
        raise InvalidSpecError(
            parameter,
            f"{text!r} is not a valid object name: use lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit",
        )
    return text


def string(parameter: str, value: object, *, allow_empty: bool = False) -> str:
    """A str, non-empty unless allowed."""
    if not isinstance(value, str):
        raise InvalidSpecError(parameter, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidSpecError(parameter, "must not be empty")
    return value


def boolean(parameter: str, value: object) -> bool:
    """A real bool: 'false' as a string is a mistake worth reporting."""
    if not isinstance(value, bool):
        raise InvalidSpecError(parameter, f"expected true or false, got {type(value).__name__}")
    return value


def integer(parameter: str, value: object, *, minimum: int) -> int:
    """An int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpecError(parameter, f"expected a whole number, got {type(value).__name__}")
    if value < minimum:
        raise InvalidSpecError(parameter, f"must be at least {minimum}, got {value}")
    return value


def optional_integer(parameter: str, value: object, *, minimum: int) -> int | None:
    """An integer of at least `minimum`, or None."""
    return None if value is None else integer(parameter, value, minimum=minimum)


def absolute_path(parameter: str, value: object) -> str:
    """An absolute POSIX path inside a container."""
    text = string(parameter, value)
    if not text.startswith("/"):
        raise InvalidSpecError(parameter, f"{text!r} must be an absolute path")
    return text


def string_list(parameter: str, value: object) -> tuple[str, ...]:
    """A list of non-empty strings; a single string is accepted as a list of one."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence):
        raise InvalidSpecError(parameter, f"expected a list of strings, got {type(value).__name__}")
    return tuple(string(f"{parameter}[{i}]", item) for i, item in enumerate(value))


def mapping(parameter: str, value: object) -> dict[str, Any]:
    """A mapping with string keys, copied so the caller cannot change it afterwards."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSpecError(parameter, f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidSpecError(parameter, f"keys must be strings, got {type(key).__name__}")
    return dict(value)


def list_of_mappings(parameter: str, value: object) -> tuple[dict[str, Any], ...]:
    """A list of mappings, as Kubernetes lists of objects (volumes, tolerations) are."""
    if value is None:
        return ()
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
        raise InvalidSpecError(
            parameter, f"expected a list of mappings, got {type(value).__name__}"
        )
    return tuple(mapping(f"{parameter}[{i}]", item) for i, item in enumerate(value))


def qualified_key(parameter: str, key: str) -> str:
    """A label or annotation key: an optional DNS subdomain prefix, '/', and a qualified name."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        raise InvalidSpecError(parameter, f"key {key!r} has an invalid prefix {prefix!r}")
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        raise InvalidSpecError(
            parameter,
            f"key {key!r} is invalid: the name part must be at most 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit",
        )
    return key


def labels(parameter: str, value: object) -> dict[str, str]:
    """Kubernetes labels: qualified keys and short, restricted values."""
    result = mapping(parameter, value)
    for key, item in result.items():
        qualified_key(parameter, key)
        text = string(f"{parameter}[{key!r}]", item, allow_empty=True)
        if len(text) > 63 or not LABEL_VALUE.fullmatch(text):
            raise InvalidSpecError(
                f"{parameter}[{key!r}]",
                f"{text!r} is not a valid label value: at most 63 letters, digits, '-', '_' or '.'",
            )
    return result


def annotation_map(parameter: str, value: object) -> dict[str, str]:
    """Kubernetes annotations: qualified keys, any string values."""
    result = mapping(parameter, value)
    for key, item in result.items():
        qualified_key(parameter, key)
        string(f"{parameter}[{key!r}]", item, allow_empty=True)
    return result


def quantity(parameter: str, value: object) -> str:
    """A resource quantity such as '500m', '2Gi' or 1; numbers are turned into strings."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidSpecError(parameter, f"expected a quantity such as '2Gi', got {value!r}")
    text = str(value)
    if not _QUANTITY.fullmatch(text) or text.startswith("-"):
        raise InvalidSpecError(
            parameter,
            f"{text!r} is not a resource quantity (examples: '250m', '1', '512Mi', '2Gi')",
        )
    return text


def env_name(parameter: str, value: object) -> str:
    """An environment variable name as Kubernetes accepts it."""
    text = string(parameter, value)
    if not _ENV_NAME.fullmatch(text):
        raise InvalidSpecError(
            parameter,
            f"{text!r} is not a valid environment variable name (letters, digits, '_', '-', '.')",
        )
    return text


def one_of(parameter: str, value: object, allowed: Sequence[str]) -> str:
    """One of a fixed set of strings."""
    text = string(parameter, value)
    if text not in allowed:
        raise InvalidSpecError(parameter, f"{text!r} is not one of {', '.join(allowed)}")
    return text
