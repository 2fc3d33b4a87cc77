#!/usr/bin/env bash
# make demo: run the example DAG in the real Airflow deployment (make airflow-up: scheduler,
# dag-processor, triggerer and api-server on PostgreSQL) against the local cluster. The Makefile
# brings up the cluster, the images and Airflow first.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
kubeconfig=${KUBECONFIG:-/var/lib/kubedbt-cluster/admin.kubeconfig}
helm=${HELM:-/var/lib/kubedbt-cluster/bin/helm}

# What a platform engineer installs once per namespace: the pods' ServiceAccount, the sidecar's
# Role and the admission policy that keeps each pod to its own results, and the launcher Role
# bound to Airflow's own identity (airflow/airflow, made by make airflow-up), exactly as for an
# Airflow running in the cluster.
"$helm" --kubeconfig "$kubeconfig" upgrade --install kubedbt "$repo/helm/kubedbt" \
  --namespace kubedbt-demo --create-namespace \
  --set launcher.createServiceAccount=false \
  --set 'launcher.subjects[0].kind=ServiceAccount' \
  --set 'launcher.subjects[0].name=airflow' \
  --set 'launcher.subjects[0].namespace=airflow' >/dev/null
echo "[demo] chart installed in kubedbt-demo, launcher bound to airflow/airflow" >&2

exec "$repo/.venv/bin/python" "$repo/examples/demo/demo.py"
