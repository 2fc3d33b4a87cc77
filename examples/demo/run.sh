#!/usr/bin/env bash
# make demo: run the example DAG through Airflow against the local cluster (make cluster-up and
# make images first; the Makefile does). Airflow runs from a throwaway AIRFLOW_HOME with SQLite;
# the task really defers, its trigger runs in-process (airflow dags test).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
kubeconfig=${KUBECONFIG:-/var/lib/kubedbt-cluster/admin.kubeconfig}
kubectl=${KUBECTL:-/var/lib/kubedbt-cluster/bin/kubectl}
airflow=$repo/.venv/bin/airflow

helm=${HELM:-/var/lib/kubedbt-cluster/bin/helm}
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

# What a platform engineer installs once per namespace: the pods' ServiceAccount, the sidecar's
# Role, and the launcher identity Airflow uses (here a ServiceAccount, since Airflow runs outside).
"$helm" --kubeconfig "$kubeconfig" upgrade --install kubedbt "$repo/helm/kubedbt" \
  --namespace kubedbt-demo --create-namespace --set launcher.createServiceAccount=true >/dev/null
echo "[demo] chart installed in kubedbt-demo" >&2

home=$(mktemp -d /tmp/kubedbt-demo-airflow.XXXXXX)
trap 'rm -rf "$home"' EXIT
# Airflow talks to the cluster as the chart's launcher, not as cluster-admin.
launcher=$home/launcher.kubeconfig
k config view --raw --minify -o json >"$launcher.admin"
token=$(k -n kubedbt-demo create token kubedbt-launcher --duration 2h)
"$repo/.venv/bin/python" - "$launcher.admin" "$launcher" "$token" <<'PY'
import json, sys
admin, out, token = sys.argv[1], sys.argv[2], sys.argv[3]
config = json.load(open(admin))
config["users"] = [{"name": "kubedbt-launcher", "user": {"token": token}}]
for context in config["contexts"]:
    context["context"].update(user="kubedbt-launcher", namespace="kubedbt-demo")
json.dump(config, open(out, "w"))
PY
rm -f "$launcher.admin"

export AIRFLOW_HOME=$home
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER=$repo/examples/dags
export AIRFLOW_CONN_KUBERNETES_DEFAULT="{\"conn_type\": \"kubernetes\", \"extra\": {\"kube_config_path\": \"$launcher\"}}"
"$airflow" db migrate >/dev/null

echo "[demo] running the jaffle_shop DAG (dbt build on DuckDB, deferrable)" >&2
log=$home/dags-test.log
status=0
"$airflow" dags test jaffle_shop >"$log" 2>&1 || status=$?

if ((status != 0)) || ! grep -q "dbt succeeded" "$log"; then
  echo "[demo] the DAG run failed; the end of its log:" >&2
  tail -n 80 "$log" >&2
  exit 1
fi

# The summary the task returned (its XCom return_value), as the task log showed it.
echo
"$repo/.venv/bin/python" - <<'PY'
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

from kubedbt.core.report import summary_lines

with create_session() as session:
    rows = session.query(XComModel).filter(XComModel.dag_id == "jaffle_shop")
    xcom = {row.key: XComModel.deserialize_value(row) for row in rows}
print(f"Job: {xcom['namespace']}/{xcom['job_name']}")
print("\n".join(summary_lines(xcom["return_value"])))
PY
echo
echo "Jobs in kubedbt-demo (a succeeded run's Job is deleted; failed ones stay for a day):"
k -n kubedbt-demo get jobs -L kubedbt.io/dag-id,kubedbt.io/try-number
