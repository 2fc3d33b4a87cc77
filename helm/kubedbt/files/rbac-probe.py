"""helm test: what the dbt pods' ServiceAccount may do, asked of the API server itself.

Runs with the standard library only, the way the results-uploader sidecar reaches the API server
(a token bound to this pod, the cluster CA, the kubernetes Service). The pod is named like a run's
pod ("<run>-" and five characters) so that PROBE_OWN plays its run's results ConfigMap and
PROBE_OTHER another run's. Each check is one request and the HTTP status it must get; the script
prints every check and exits 1 if any status differs. Writes that must be refused are sent as dry
runs, so a wrongly allowed one changes nothing.
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
BASE = f"/api/v1/namespaces/{NAMESPACE}"
MERGE = "application/merge-patch+json"
DRY_RUN = "?dryRun=All"


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
        try:
            return e.code, json.load(e)
        except ValueError:
            return e.code, {}


def checks(env):
    """(what, method, path, body, content type, wanted status or statuses, check of the body)."""
    own = f"{BASE}/configmaps/{env['PROBE_OWN']}"
    other = f"{BASE}/configmaps/{env['PROBE_OTHER']}"
    defaults = f"{BASE}/configmaps/{env['PROBE_DEFAULTS']}"
    scoped = env["PROBE_SCOPED"] == "true"
    marker = env["PROBE_MARKER"]
    patch = {"data": {"probe": marker}}

    def landed(payload):
        return payload.get("data", {}).get("probe") == marker

    # Without the scoping policy another run's ConfigMap is writable: the probe reports it.
    cross_run = 403 if scoped else 200
    # kubedbt-defaults exists when the chart creates it; otherwise it may (made by hand: refused
    # like any other) or may not (a patch of nothing is a 404) be there.
    created = env["PROBE_DEFAULTS_EXISTS"] == "true"
    defaults_patch = {cross_run} if created else {cross_run, 404}
    exec_path = f"{BASE}/pods/{env['PROBE_POD']}/exec?command=true&stdout=true"
    return [
        ("patch the results ConfigMap of its own run", "PATCH", own, patch, MERGE, 200, landed),
        ("read it (refused: the patch's response is all it reads)", "GET", own, None, None, 403,
         None),
        ("delete it (refused)", "DELETE", own + DRY_RUN, None, None, 403, None),
        ("patch another run's results ConfigMap" + (" (refused)" if scoped else " (NOT SCOPED)"),
         "PATCH", other + DRY_RUN, patch, MERGE, cross_run, None),
        ("read another run's results ConfigMap (refused)", "GET", other, None, None, 403, None),
        ("patch kubedbt-defaults" + (" (refused)" if scoped else " (NOT SCOPED)")
         + ("" if created else ", if it exists"),
         "PATCH", defaults + DRY_RUN, patch, MERGE, defaults_patch, None),
        ("read kubedbt-defaults (refused)", "GET", defaults, None, None, 403, None),
        ("list ConfigMaps (refused)", "GET", f"{BASE}/configmaps", None, None, 403, None),
        ("create a ConfigMap (refused)", "POST", f"{BASE}/configmaps{DRY_RUN}",
         {"metadata": {"name": env["PROBE_OWN"] + "-new"}}, None, 403, None),
        ("list Secrets (refused)", "GET", f"{BASE}/secrets", None, None, 403, None),
        ("get a Secret (refused)", "GET", f"{BASE}/secrets/{env['PROBE_OWN']}", None, None, 403,
         None),
        ("list pods (refused)", "GET", f"{BASE}/pods", None, None, 403, None),
        ("exec into its own pod (refused)", "POST", exec_path, None, None, 403, None),
    ]  # fmt: skip


def main():
    failed = 0
    planned = checks(os.environ)
    for what, method, path, body, content_type, expected, check in planned:
        wanted = expected if isinstance(expected, set) else {expected}
        status, payload = call(method, path, body, content_type or "application/json")
        ok = status in wanted and (check is None or check(payload))
        failed += not ok
        want = " or ".join(str(code) for code in sorted(wanted))
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {method} {path} -> {status} (want {want})")
        if not ok and payload.get("message"):
            print(f"     {payload['message']}")
    print(f"{failed} of {len(planned)} checks failed" if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
