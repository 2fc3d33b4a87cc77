"""Record, from the real local cluster, the failed responses that test_api_errors.py replays.

    python -m tests.unit.record_api_errors [--out FILE]

Each scenario makes one request with kubernetes_asyncio, the client kubedbt uses, that the API
server refuses, and keeps what the client's ApiException holds: status, reason, headers and body.
The Jobs are rendered by kubedbt's renderer with env_vars holding SECRET, and the refusals are
the API server's own: RBAC, a ValidatingAdmissionPolicy whose message repeats the env values
(as an admission webhook might), an existing Job, an invalid label value, an admission webhook
that cannot be called; and the ERROR event of a watch from a compacted resourceVersion (a 200
whose one line is a 410 Status). Everything is made in a fresh namespace and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from kubedbt import DbtRunSpec, RunIdentity, render_job

DEFAULT_KUBECONFIG = "/var/lib/kubedbt-cluster/admin.kubeconfig"
DEFAULT_OUT = Path(__file__).parent / "fixtures" / "api_errors.json"
SECRET = "recorded-secret-7f3c9a"
ENV = {"WAREHOUSE_PASSWORD": SECRET, "WAREHOUSE_ACCOUNT": "acct-" + SECRET}
ECHO = (
    "'refused; env: ' + object.spec.template.spec.containers.map(c, has(c.env) ? "
    "c.env.filter(e, has(e.value)).map(e, e.value).join(',') : '').join(';')"
)


async def _refusal(request: Awaitable[Any]) -> dict[str, Any]:
    try:
        await request
    except client.ApiException as e:
        body = e.body.decode() if isinstance(e.body, bytes) else e.body
        return {
            "status": e.status,
            "reason": e.reason,
            "headers": dict(e.headers),
            "body": body,
        }
    raise AssertionError("the API server accepted what it was meant to refuse")


def _job(namespace: str, name: str) -> dict[str, Any]:
    spec = DbtRunSpec(command="build", image="kubedbt/dbt:dev", namespace=namespace, env_vars=ENV)
    job = render_job(spec, RunIdentity("record", "api_errors", f"manual__{name}"))
    return dict(job)


def echoing_policy(name: str, namespace: str, reason: str | None) -> tuple[dict[str, Any], ...]:
    """A ValidatingAdmissionPolicy refusing every Job created in `namespace` with a message that
    echoes the Job's env values (as a careless webhook would), and its binding."""
    validation: dict[str, Any] = {"expression": "false", "messageExpression": ECHO}
    if reason:
        validation["reason"] = reason
    policy = {
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["batch"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE"],
                        "resources": ["jobs"],
                    }
                ]
            },
            "validations": [validation],
        },
    }
    binding = {
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    return policy, binding


async def _with_policy(
    api: client.ApiClient, namespace: str, reason: str | None, job: dict[str, Any]
) -> dict[str, Any]:
    admission = client.AdmissionregistrationV1Api(api)
    name = f"kubedbt-record-{uuid.uuid4().hex[:8]}"
    policy, binding = echoing_policy(name, namespace, reason)
    await admission.create_validating_admission_policy(policy)
    try:
        await admission.create_validating_admission_policy_binding(binding)
        try:
            batch = client.BatchV1Api(api)
            for _ in range(50):  # the policy takes a moment to be enforced
                try:
                    created = await batch.create_namespaced_job(namespace, job)
                except client.ApiException:
                    break
                await batch.delete_namespaced_job(
                    created.metadata.name, namespace, propagation_policy="Background"
                )
                await asyncio.sleep(0.2)
            return await _refusal(batch.create_namespaced_job(namespace, job))
        finally:
            await admission.delete_validating_admission_policy_binding(name)
    finally:
        await admission.delete_validating_admission_policy(name)
        await _until_allowed(api, namespace, _job(namespace, "probe"))


async def _until_allowed(api: client.ApiClient, namespace: str, job: dict[str, Any]) -> None:
    """Wait until a removed policy or webhook no longer refuses Jobs (a moment)."""
    batch = client.BatchV1Api(api)
    for _ in range(100):
        try:
            created = await batch.create_namespaced_job(namespace, job)
        except client.ApiException:
            await asyncio.sleep(0.2)
            continue
        await batch.delete_namespaced_job(
            created.metadata.name, namespace, propagation_policy="Background"
        )
        return
    raise AssertionError("Jobs are still refused")


async def _with_webhook(api: client.ApiClient, namespace: str, job: dict[str, Any]) -> Any:
    admission = client.AdmissionregistrationV1Api(api)
    name = f"kubedbt-record-{uuid.uuid4().hex[:8]}.kubedbt.io"
    webhook = {
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": name,
                "clientConfig": {"service": {"namespace": namespace, "name": "nowhere"}},
                "rules": [
                    {
                        "apiGroups": ["batch"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE"],
                        "resources": ["jobs"],
                    }
                ],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            }
        ],
    }
    await admission.create_validating_webhook_configuration(webhook)
    try:
        await asyncio.sleep(2)  # the webhook takes a moment to be called
        return await _refusal(client.BatchV1Api(api).create_namespaced_job(namespace, job))
    finally:
        await admission.delete_validating_webhook_configuration(name)
        await _until_allowed(api, namespace, _job(namespace, "probe"))


async def _expired_watch(batch: client.BatchV1Api, namespace: str) -> dict[str, Any]:
    response = await batch.list_namespaced_job(
        namespace, watch=True, resource_version="1", timeout_seconds=5, _preload_content=False
    )
    try:
        line = await asyncio.wait_for(response.content.readline(), 10)
        headers = dict(response.headers)
        return {"status": response.status, "reason": response.reason, "headers": headers,
                "body": line.decode()}  # fmt: skip
    finally:
        response.release()


async def _stranger(api: client.ApiClient, namespace: str) -> client.ApiClient:
    """A client authenticated as a ServiceAccount that may do nothing."""
    core = client.CoreV1Api(api)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "stranger"}})
    token = await core.create_namespaced_service_account_token(
        "stranger", namespace, {"spec": {"expirationSeconds": 600}}
    )
    configuration = copy.copy(api.configuration)
    configuration.api_key = {"BearerToken": token.status.token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    configuration.cert_file = configuration.key_file = None
    return client.ApiClient(configuration)


async def record(kubeconfig: str) -> dict[str, Any]:
    api = await config.new_client_from_config(config_file=kubeconfig)
    namespace = f"kubedbt-record-{uuid.uuid4().hex[:8]}"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    await core.create_namespace({"metadata": {"name": namespace}})
    try:
        found: dict[str, Any] = {}
        async with await _stranger(api, namespace) as stranger:
            found["forbidden_rbac"] = await _refusal(
                client.BatchV1Api(stranger).create_namespaced_job(
                    namespace, _job(namespace, "rbac")
                )
            )
        found["forbidden_policy"] = await _with_policy(
            api, namespace, "Forbidden", _job(namespace, "policy-forbidden")
        )
        found["invalid_policy"] = await _with_policy(
            api, namespace, None, _job(namespace, "policy-invalid")
        )
        job = _job(namespace, "conflict")
        await batch.create_namespaced_job(namespace, job)
        found["conflict"] = await _refusal(batch.create_namespaced_job(namespace, job))
        bad = _job(namespace, "invalid-label")
        bad["metadata"]["labels"]["warehouse"] = f"{SECRET} is no label value"
        found["invalid_field"] = await _refusal(batch.create_namespaced_job(namespace, bad))
        found["not_found"] = await _refusal(batch.read_namespaced_job("nowhere", namespace))
        found["watch_expired"] = await _expired_watch(batch, namespace)
        found["webhook_unreachable"] = await _with_webhook(
            api, namespace, _job(namespace, "webhook")
        )
        return found
    finally:
        await core.delete_namespace(namespace)
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    kubeconfig = os.environ.get("KUBECONFIG", DEFAULT_KUBECONFIG)
    found = asyncio.run(record(kubeconfig))
    args.out.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    print(f"wrote {', '.join(found)} to {args.out}")


if __name__ == "__main__":
    main()
