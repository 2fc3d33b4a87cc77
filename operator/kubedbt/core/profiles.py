"""dbt profiles rendered from Airflow connections: one mapping per warehouse connection type.

An Airflow connection becomes a profiles.yml with one profile, PROFILE_NAME, whose one output is
the target the task asked for. The mappings follow what the community's Airflow connection types
hold and where (the postgres hook's `schema` field is the database, Snowflake's account and
warehouse are extras, a BigQuery keyfile is the google_cloud_platform connection's keyfile_dict),
so a connection that works for Airflow's own hooks works here. `profile_args` are laid over the
rendered output: the dbt schema, threads, or any adapter option the connection does not carry.

The text is secret: the Profile that carries it never shows it in its repr or str, and errors
name the connection's missing field, never a value. Everything here is pure; reading the
connection (airflow/profiles.py) and storing the text in a Secret (io/kube.py) happen elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from kubedbt.core import naming, validate
from kubedbt.core.command import PROFILE_DIR
from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.manifests import SecretManifest
from kubedbt.core.naming import RunIdentity
from kubedbt.core.spec import DbtRunSpec, yaml_mapping
from kubedbt.core.validate_pod import PROFILE_VOLUME

PARAMETER: Final = "profile_conn_id"
ARGS_PARAMETER: Final = "profile_args"
TARGET_PARAMETER: Final = "profile_target"
# The profile's name in the rendered profiles.yml; dbt gets `--profile kubedbt`.
PROFILE_NAME: Final = "kubedbt"
PROFILES_FILE: Final = "profiles.yml"
# Extras older Airflow providers store with a prefix ("extra__snowflake__account").
_PREFIXES: Final = ("extra__{}__", "")

Output = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ConnectionFields:
    """What an Airflow connection holds, as plain data (Airflow's Connection stays outside core)."""

    conn_id: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def extra_value(self, key: str) -> Any:
        """An extra by its plain name or the provider's old `extra__<type>__` prefixed one."""
        for prefix in _PREFIXES:
            value = self.extra.get(prefix.format(self.conn_type) + key)
            if value not in (None, ""):
                return value
        return None


@dataclass(frozen=True)
class Profile:
    """A rendered profiles.yml: the text (secret), the target dbt runs and what must be masked."""

    text: str = field(repr=False)
    target: str
    conn_type: str
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """The values in `text` that are secret (passwords, tokens, keys), for log masking."""

    def __str__(self) -> str:
        return repr(self)


def render_profile(
    fields_: ConnectionFields, *, target: str, args: Mapping[str, Any] | None = None
) -> Profile:
    """The profiles.yml for the connection, its one output named `target`, `args` laid over it.

    Raises InvalidSpecError naming profile_conn_id for a connection type with no mapping or a
    connection missing a field dbt needs, and naming profile_args for arguments dbt cannot take.
    """
    check_profile_parameters(fields_.conn_id, target, args)
    overlay = yaml_mapping(ARGS_PARAMETER, {} if args is None else args)
    mapper = MAPPERS.get(fields_.conn_type)
    if mapper is None:
        raise InvalidSpecError(
            PARAMETER,
            f"connection {fields_.conn_id!r}: connection type {fields_.conn_type!r} has no dbt "
            f"profile; supported: {', '.join(sorted(MAPPERS))}",
        )
    output, secrets = mapper(fields_, overlay)
    output = {**output, **overlay}
    document = {PROFILE_NAME: {"target": target, "outputs": {target: output}}}
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=2**31)
    found = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
    return Profile(text, target, fields_.conn_type, found)


def with_target(profile: Profile, target: str) -> Profile:
    """The same profile with its one output named `target` (an adopted Job's own target)."""
    if target == profile.target:
        return profile
    document = yaml.safe_load(profile.text)
    (output,) = document[PROFILE_NAME]["outputs"].values()
    document = {PROFILE_NAME: {"target": target, "outputs": {target: output}}}
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=2**31)
    return dataclasses.replace(profile, text=text, target=target)


# --- the mappings: (connection, profile_args) -> (dbt output, secret values) ---

Mapper = Callable[[ConnectionFields, Mapping[str, Any]], tuple[Output, list[str]]]


def _required(fields_: ConnectionFields, value: Any, what: str, where: str) -> Any:
    """`value`, or an error saying which field of the connection to fill (never a value)."""
    if value in (None, ""):
        raise InvalidSpecError(
            PARAMETER,
            f"{fields_.conn_type} connection {fields_.conn_id!r} has no {what}: set its {where}",
        )
    return value


def _from_extra(fields_: ConnectionFields, keys: tuple[str, ...]) -> Output:
    """The listed extras that are set, under the same names in the dbt output."""
    found = {key: fields_.extra_value(key) for key in keys}
    return {key: value for key, value in found.items() if value is not None}


def _dbt_schema(overlay: Mapping[str, Any], default: str) -> str:
    """The schema dbt builds in: profile_args' when given, else `default` (may be empty)."""
    if "schema" not in overlay:
        return default
    return validate.string(f"{ARGS_PARAMETER}.schema", overlay["schema"])


_POSTGRES_EXTRAS: Final = (
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "connect_timeout",
    "keepalives_idle",
    "search_path",
    "role",
    "application_name",
)


def _postgres_like(
    fields_: ConnectionFields, overlay: Mapping[str, Any], *, port: int, extras: tuple[str, ...]
) -> Output:
    """What postgres and redshift outputs share.

    Airflow's postgres-style connection keeps the database in `schema`; dbt's schema is another
    thing (where models are built), public unless profile_args say otherwise.
    """
    return {
        "host": _required(fields_, fields_.host, "host", "Host"),
        "port": fields_.port or port,
        "user": _required(fields_, fields_.login, "login", "Login"),
        "password": fields_.password or "",
        "dbname": _required(fields_, fields_.schema, "database", "Database (schema) field"),
        "schema": _dbt_schema(overlay, "public"),
        **_from_extra(fields_, extras),
    }


def _postgres(fields_: ConnectionFields, overlay: Mapping[str, Any]) -> tuple[Output, list[str]]:
    shared = _postgres_like(fields_, overlay, port=5432, extras=_POSTGRES_EXTRAS)
    return {"type": "postgres", **shared}, [fields_.password or ""]


def _redshift(fields_: ConnectionFields, overlay: Mapping[str, Any]) -> tuple[Output, list[str]]:
    extras = ("sslmode", "connect_timeout", "role", "ra3_node", "autocommit")
    shared = _postgres_like(fields_, overlay, port=5439, extras=extras)
    return {"type": "redshift", "method": "database", **shared}, [fields_.password or ""]


def _snowflake(fields_: ConnectionFields, overlay: Mapping[str, Any]) -> tuple[Output, list[str]]:
    account = _required(fields_, fields_.extra_value("account"), "account", "extra 'account'")
    region = fields_.extra_value("region")
    # The Snowflake hook appends the region to a legacy account locator; so does dbt's account.
    if region and "." not in str(account):
        account = f"{account}.{region}"
    output: Output = {
        "type": "snowflake",
        "account": account,
        "user": _required(fields_, fields_.login, "login", "Login"),
        "database": _required(
            fields_, fields_.extra_value("database"), "database", "extra 'database'"
        ),
        "warehouse": _required(
            fields_, fields_.extra_value("warehouse"), "warehouse", "extra 'warehouse'"
        ),
        "schema": _dbt_schema(overlay, fields_.schema or ""),
        **_from_extra(fields_, ("role", "authenticator")),
    }
    if not output["schema"]:
        _required(fields_, None, "schema", "Schema field or profile_args 'schema'")
    key = fields_.extra_value("private_key_content")
    key_file = fields_.extra_value("private_key_file")
    secrets = [fields_.password or ""]
    if key or key_file:
        # As in the Snowflake hook: with a key pair, the password is the key's passphrase.
        if key:
            output["private_key"] = str(key)
            secrets.append(str(key))
        else:
            output["private_key_path"] = str(key_file)
        if fields_.password:
            output["private_key_passphrase"] = fields_.password
    elif fields_.password:
        output["password"] = fields_.password
    elif output.get("authenticator") is None:
        _required(fields_, None, "password or private key", "Password or extra private_key_content")
    return output, secrets


def _bigquery(fields_: ConnectionFields, overlay: Mapping[str, Any]) -> tuple[Output, list[str]]:
    project = _required(fields_, fields_.extra_value("project"), "project", "extra 'project'")
    dataset = overlay.get("dataset", overlay.get("schema"))
    if dataset in (None, ""):
        raise InvalidSpecError(
            ARGS_PARAMETER, "a BigQuery profile needs the dataset dbt builds in: set 'dataset'"
        )
    output: Output = {"type": "bigquery", "project": project, "dataset": dataset}
    secrets: list[str] = []
    keyfile = fields_.extra_value("keyfile_dict")
    key_path = fields_.extra_value("key_path")
    if keyfile is not None:
        parsed = _keyfile(fields_, keyfile)
        output.update(method="service-account-json", keyfile_json=parsed)
        secrets += [str(v) for v in parsed.values() if isinstance(v, str) and "\n" in v]
        secrets += [str(parsed.get("private_key_id") or ""), json.dumps(parsed)]
    elif key_path is not None:
        output.update(method="service-account", keyfile=str(key_path))
    else:
        # No key: the pod's own identity (Workload Identity), as the hook's default credentials.
        output["method"] = "oauth"
    if fields_.extra_value("location"):
        output["location"] = fields_.extra_value("location")
    return output, secrets


def _keyfile(fields_: ConnectionFields, keyfile: Any) -> dict[str, Any]:
    if isinstance(keyfile, Mapping):
        return dict(keyfile)
    try:
        parsed = json.loads(str(keyfile))
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        # The value is a key: never quote it.
        raise InvalidSpecError(
            PARAMETER,
            f"google_cloud_platform connection {fields_.conn_id!r}: extra 'keyfile_dict' is not "
            "a JSON object",
        )
    return parsed


def _databricks(fields_: ConnectionFields, overlay: Mapping[str, Any]) -> tuple[Output, list[str]]:
    host = str(_required(fields_, fields_.host, "host", "Host"))
    token = fields_.extra_value("token") or fields_.password
    output: Output = {
        "type": "databricks",
        # dbt wants the bare workspace host; the Databricks hook accepts it with a scheme.
        "host": host.removeprefix("https://").removeprefix("http://").rstrip("/"),
        "http_path": _required(
            fields_, fields_.extra_value("http_path"), "http_path", "extra 'http_path'"
        ),
        "token": _required(fields_, token, "token", "Password or extra 'token'"),
        "schema": _dbt_schema(overlay, fields_.schema or "default"),
        **_from_extra(fields_, ("catalog",)),
    }
    return output, [str(token)]


def _trino(fields_: ConnectionFields, overlay: Mapping[str, Any]) -> tuple[Output, list[str]]:
    protocol = fields_.extra_value("protocol") or "http"
    output: Output = {
        "type": "trino",
        "method": "ldap" if fields_.password else "none",
        "host": _required(fields_, fields_.host, "host", "Host"),
        "port": fields_.port or (443 if protocol == "https" else 8080),
        "user": _required(fields_, fields_.login, "login", "Login"),
        "database": fields_.extra_value("catalog") or "hive",
        "schema": _dbt_schema(overlay, fields_.schema or ""),
        "http_scheme": protocol,
    }
    if not output["schema"]:
        _required(fields_, None, "schema", "Schema field or profile_args 'schema'")
    if fields_.password:
        output["password"] = fields_.password
    return output, [fields_.password or ""]


def _duckdb(fields_: ConnectionFields, overlay: Mapping[str, Any]) -> tuple[Output, list[str]]:
    # The DuckDB provider keeps the database file's path in `host`.
    path = fields_.extra_value("path") or fields_.host
    output: Output = {"type": "duckdb", "path": _required(fields_, path, "path", "Host (path)")}
    if fields_.password:  # a MotherDuck token
        output["settings"] = {"motherduck_token": fields_.password}
    return output, [fields_.password or ""]


MAPPERS: Final[Mapping[str, Mapper]] = {
    "postgres": _postgres,
    "redshift": _redshift,
    "snowflake": _snowflake,
    "google_cloud_platform": _bigquery,
    "gcpbigquery": _bigquery,
    "databricks": _databricks,
    "trino": _trino,
    "duckdb": _duckdb,
}


def check_profile_parameters(conn_id: object, target: object, args: object) -> None:
    """Check the profile parameters before any connection is read, naming the bad one."""
    validate.string(PARAMETER, conn_id)
    if target is not None:
        validate.string(TARGET_PARAMETER, target)
    overlay = yaml_mapping(ARGS_PARAMETER, {} if args is None else args)
    if "type" in overlay:
        raise InvalidSpecError(
            ARGS_PARAMETER, "'type' comes from the connection's type and cannot be overridden"
        )


def refuse_chosen(spec: DbtRunSpec) -> None:
    """With a rendered profile kubedbt chooses profiles_dir, profile and target: refuse each."""
    chosen = {
        "profiles_dir": spec.profiles_dir is not None,
        "profile": spec.profile is not None,
        "target": spec.target is not None,
    }
    for name, is_set in chosen.items():
        if is_set:
            raise InvalidSpecError(
                name,
                f"cannot be combined with {PARAMETER}: kubedbt renders the profile "
                f"(use {TARGET_PARAMETER} to name the target)",
            )


# --- the run's side: the spec, the Secret, its volume ---


def profile_spec(spec: DbtRunSpec, profile: Profile) -> DbtRunSpec:
    """`spec` running dbt on the rendered profile: its directory, name and target.

    The spec's own profiles_dir, profile and target are refused by name: kubedbt chooses them.
    `dbt retry` keeps these flags (render.retry_spec), so a resumed try reads its own profile.
    """
    refuse_chosen(spec)
    return dataclasses.replace(
        spec, profiles_dir=PROFILE_DIR, profile=PROFILE_NAME, target=profile.target
    )


def render_profile_secret(
    spec: DbtRunSpec, identity: RunIdentity, profile: Profile
) -> SecretManifest:
    """The try's immutable Secret holding profiles.yml; created with the Job and owned by it."""
    manifest: SecretManifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": naming.profile_secret_name(identity),
            "namespace": spec.namespace,
            "labels": {**spec.labels, **naming.run_labels(identity)},
            "annotations": naming.run_annotations(identity),
        },
        "type": "Opaque",
        # Nothing may change it under a running pod, and the kubelet stops watching it.
        "immutable": True,
        "stringData": {PROFILES_FILE: profile.text},
    }
    return manifest


def profile_volume(secret_name: str) -> dict[str, Any]:
    """The pod volume of the profile Secret: readable by the pod's group (fsGroup), nobody else."""
    return {
        "name": PROFILE_VOLUME,
        "secret": {
            "secretName": secret_name,
            "items": [{"key": PROFILES_FILE, "path": PROFILES_FILE}],
            "defaultMode": 0o440,
        },
    }


def profile_mount() -> dict[str, Any]:
    """The dbt container's mount of the profile volume (no other container mounts it)."""
    return {"name": PROFILE_VOLUME, "mountPath": PROFILE_DIR, "readOnly": True}
