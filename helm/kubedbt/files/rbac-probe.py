"""helm test: what the dbt pods' ServiceAccount may do, asked of the API server itself.

Runs with the standard library only, the way the results-uploader sidecar reaches the API server
(service-account token, cluster CA, the kubernetes Service). Each check is one request and the
HTTP status it must get; the script prints every check and exits 1 if any status differs.
"""

import json
import os
import pathlib
import ssl
import sys
import urllib.error
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
NAMESPACE = pathlib.Path(f"{SA}/namespace").read_text().strip()
TOKEN = pathlib.Path(f"{SA}/token").read_text().strip()
CONTEXT = ssl.create_default_context(cafile=f"{SA}/ca.crt")
SERVER = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
CONFIGMAP = os.environ["PROBE_CONFIGMAP"]
MARKER = os.environ["PROBE_MARKER"]
BASE = f"/api/v1/namespaces/{NAMESPACE}"


def call(method, path, body=None, content_type="application/json"):
    """The HTTP status and decoded JSON body of one request."""
    request = urllib.request.Request(
        SERVER + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, context=CONTEXT, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, {}


def main():
    configmap = f"{BASE}/configmaps/{CONFIGMAP}"
    patch = {"data": {"probe": MARKER}}
    create = {"metadata": {"name": f"{CONFIGMAP}-new"}}
    merge = "application/merge-patch+json"
    checks = [
        # (what, method, path, body, content type, expected status)
        ("patch the results ConfigMap", "PATCH", configmap, patch, merge, 200),
        ("read the patch back", "GET", configmap, None, None, 200),
        ("list ConfigMaps (refused)", "GET", f"{BASE}/configmaps", None, None, 403),
        ("create a ConfigMap (refused)", "POST", f"{BASE}/configmaps", create, None, 403),
        ("list Secrets (refused)", "GET", f"{BASE}/secrets", None, None, 403),
        ("get a Secret (refused)", "GET", f"{BASE}/secrets/{CONFIGMAP}", None, None, 403),
        ("list pods (refused)", "GET", f"{BASE}/pods", None, None, 403),
    ]
    failed = 0
    for what, method, path, body, content_type, expected in checks:
        status, payload = call(method, path, body, content_type or "application/json")
        ok = status == expected
        if ok and method == "GET" and expected == 200:
            # The patch must have landed, not just been accepted.
            ok = payload.get("data", {}).get("probe") == MARKER
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {method} {path} -> {status} (want {expected})")
    print(f"{failed} of {len(checks)} checks failed" if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
