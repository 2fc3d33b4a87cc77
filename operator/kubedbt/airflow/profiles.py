"""A dbt profile from an Airflow connection: read with the Task SDK, masked, rendered.

The connection is read in the worker at execute time, before anything is created in the cluster,
so a missing connection or one kubedbt cannot map fails the try with a message naming
profile_conn_id. The password, the extras Airflow deems sensitive by their key (private keys,
tokens, keyfile JSON), the values the mapping knows are secret (a private key inside keyfile
JSON) and the rendered profiles.yml itself are masked in task logs before anything could log them;
ordinary extras (account, database, warehouse) stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.profiles import PARAMETER, ConnectionFields, Profile, render_profile


def connection_fields(conn_id: str) -> ConnectionFields:
    """The fields of Airflow connection `conn_id`, its password and extras masked in logs."""
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as e:
        raise InvalidSpecError(PARAMETER, f"Airflow has no connection {conn_id!r}") from e
    extra = connection.extra_dejson  # {} for extras that are not a JSON object, never the text
    extra = dict(extra) if isinstance(extra, Mapping) else {}
    if connection.password:
        mask_secret(connection.password)
    # Airflow's own rule, by key: private_key_content, token, keyfile_dict... are hidden, while
    # account, database, warehouse or http_path stay readable in the task log. What a mapper
    # knows to be secret besides (a key inside keyfile JSON) is masked by read_profile.
    mask_secret(extra)
    return ConnectionFields(
        conn_id=conn_id,
        conn_type=str(connection.conn_type or ""),
        host=connection.host or None,
        port=connection.port or None,
        login=connection.login or None,
        password=connection.password or None,
        schema=connection.schema or None,
        extra=extra,
    )


def read_profile(conn_id: str, *, target: str | None, args: Mapping[str, Any] | None) -> Profile:
    """The profiles.yml for connection `conn_id`; its secrets are masked before it is returned.

    `target` names the profile's one output, the connection id when unset.
    """
    fields = connection_fields(conn_id)
    profile = render_profile(fields, target=target or conn_id, args=args)
    for secret in profile.secrets:
        mask_secret(secret)
    mask_secret(profile.text)
    return profile
