#!/usr/bin/env bash
# Show which cluster components run and the node list; exit non-zero unless the cluster is healthy.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ ${CLUSTER:-local} == kind ]]; then
  exec "$cluster_dir/kind.sh" status
fi

healthy=true
for c in "${components[@]}" dockerd; do
  if daemon_running "$c"; then
    printf '%-24s running (pid %s)\n' "$c" "$(daemon_pid "$c")"
  elif [[ $c == dockerd ]]; then
    # Only images.sh needs dockerd; the cluster runs without it.
    printf '%-24s not running (started by images.sh when needed)\n' "$c"
  else
    printf '%-24s NOT RUNNING\n' "$c"
    healthy=false
  fi
done

echo
if [[ -s $admin_kubeconfig ]] && kc get nodes -o wide; then
  cluster_healthy || healthy=false
else
  echo "apiserver not reachable with $admin_kubeconfig"
  healthy=false
fi

if [[ $healthy == true ]]; then
  echo "cluster healthy; KUBECONFIG=$admin_kubeconfig"
else
  echo "cluster NOT healthy; logs in $log_dir"
  exit 1
fi
