#!/usr/bin/env bash
# A real Airflow 3 deployment on this machine, for the fault tests and the demo.
#
#   tests/airflow/airflow.sh up                  # prints the API's URL on stdout
#   tests/airflow/airflow.sh down | status
#   tests/airflow/airflow.sh start|stop|kill|restart NAME
#
# NAME: scheduler, dag-processor, triggerer, api-server, or postgres (the Airflow components exit
# when they lose their database; `up` starts them again). PostgreSQL (Debian's
# package, our own data directory) and the four Airflow components are host processes, each started
# with setsid and tracked by a pid file like the cluster's daemons (lib.sh). Everything lives in
# $KUBEDBT_STATE/airflow, which `down` removes: pids/ and logs/ of the processes, home/
# (AIRFLOW_HOME, task logs), statsd.log (every metric line Airflow sent to the StatsD listener
# tests/airflow/statsd_sink.py, which `up` starts as the component statsd-sink), dags/ (links to
# examples/dags/*.py and tests/deployment/dags/*.py, made by `up`), pgdata/, and env, the
# configuration every component reads: a shell that sources it runs the same Airflow (airflow dags
# list-import-errors, airflow tasks states-for-dag-run).
#
# Airflow reaches the cluster as the ServiceAccount airflow/airflow, with no rights of its own. A
# namespace where kubedbt runs grants it the launcher Role through the chart:
#   helm install kubedbt helm/kubedbt -n NS --set launcher.subjects[0].kind=ServiceAccount \
#     --set launcher.subjects[0].name=airflow --set launcher.subjects[0].namespace=airflow
#
# `kill NAME` is a crash: SIGKILL to every process of the component's session, not only to its
# process group. With the LocalExecutor a task runs in a grandchild of the scheduler that has a
# process group of its own (the task SDK's supervisor puts it there), so killing the scheduler's
# group would leave the task running with no supervisor, which no real crash does.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
airflow_state=$KUBEDBT_STATE/airflow
# lib.sh's daemon helpers (daemon_running, daemon_pid) read these.
pid_dir=$airflow_state/pids
log_dir=$airflow_state/logs
env_file=$airflow_state/env
airflow_kubeconfig=$airflow_state/airflow.kubeconfig

api_port=${KUBEDBT_AIRFLOW_PORT:-8080}
statsd_port=${KUBEDBT_AIRFLOW_STATSD_PORT:-8125}
statsd_log=$airflow_state/statsd.log
db_port=${KUBEDBT_AIRFLOW_DB_PORT:-5433}
api_url=http://127.0.0.1:$api_port
stop_timeout=${KUBEDBT_AIRFLOW_STOP_TIMEOUT:-30} # seconds from SIGTERM to SIGKILL
start_timeout=${KUBEDBT_AIRFLOW_START_TIMEOUT:-240}

venv=$repo/.venv
python=$venv/bin/python
PG_VERSION=${PG_VERSION:-15}
pg_bin=/usr/lib/postgresql/$PG_VERSION/bin
pgdata=$airflow_state/pgdata
pg_socket_dir=$airflow_state/pgsocket

# Start order. The api-server comes first and goes last: tasks report to its execution API.
airflow_components=(api-server scheduler dag-processor triggerer)

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- processes ---

# start_process NAME EXE COMMAND...: start COMMAND in a session of its own, output to logs/NAME.log,
# and record its pid with EXE, the binary it ends up running (after setpriv, or the interpreter of
# a script), which is what daemon_running checks.
start_process() {
  local name=$1 exe=$2 pid
  shift 2
  mkdir -p "$pid_dir" "$log_dir"
  # setsid execs in place (this background child is not a process group leader), and so does
  # setpriv, so $! is the process itself. Descriptors past stderr are closed first: run under
  # `flock LOCK airflow.sh up`, the daemon would otherwise inherit the lock and hold it for life.
  (
    close_inherited_fds
    exec setsid "$@"
  ) >>"$log_dir/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid $(readlink -f "$exe")" >"$pid_dir/$name.pid"
  for _ in {1..20}; do
    daemon_running "$name" && break
    sleep 0.1
  done
  daemon_running "$name" || die "$name exited at once; see $log_dir/$name.log:
$(tail -n 20 "$log_dir/$name.log")"
  log "started $name (pid $pid), log in $log_dir/$name.log"
}

# Close every descriptor of this (sub)shell but stdin, stdout and stderr.
close_inherited_fds() {
  local fd
  for fd in /proc/"$BASHPID"/fd/*; do
    fd=${fd##*/}
    if ((fd > 2)); then
      eval "exec $fd>&-"
    fi
  done
}

# session_pids PID: the live processes of the session PID leads, and their descendants (postgres'
# backends make sessions of their own): a component and everything it started.
session_pids() {
  ps -e -o pid=,ppid=,sid=,stat= | awk -v root="$1" '
    $4 !~ /^Z/ { ppid[$1] = $2; sid[$1] = $3 }
    END {
      for (changed = 1; changed;) {
        changed = 0
        for (p in ppid) if (!(p in keep) && (p == root || sid[p] == root || ppid[p] in keep)) {
          keep[p] = 1
          changed = 1
        }
      }
      for (p in keep) print p
    }'
}

# Whether none of the pids exists, not even as a zombie: postgres refuses to start while the pid in
# its lock file exists, and init reaps orphans only a moment after they die.
pids_gone() {
  local pid
  for pid; do
    ! kill -0 "$pid" 2>/dev/null || return 1
  done
}

# kill_session PID: SIGKILL what session_pids finds and wait (bounded) until it is gone.
kill_session() {
  local pids
  pids=$(session_pids "$1")
  [[ -n $pids ]] || return 0
  # shellcheck disable=SC2086 # one pid a word
  kill -KILL $pids 2>/dev/null || true
  # shellcheck disable=SC2086
  wait_until "the processes of session $1 to exit" 10 pids_gone $pids || true
}

# stop_process NAME [SIGNAL]: SIGNAL (default TERM), up to $stop_timeout for the process to exit,
# then SIGKILL to its whole session. Whatever the session still holds after a clean exit (a task
# runner whose supervisor is gone) is killed too.
stop_process() {
  local name=$1 signal=${2:-TERM} pid i left
  if ! daemon_running "$name"; then
    rm -f "$pid_dir/$name.pid"
    return
  fi
  pid=$(daemon_pid "$name")
  kill "-$signal" "$pid" 2>/dev/null || true
  for ((i = 0; i < stop_timeout * 5; i++)); do
    daemon_running "$name" || break
    sleep 0.2
  done
  # Without the leader itself: it may still be on its way out, its exe link already gone.
  left=$(session_pids "$pid" | awk -v leader="$pid" '$1 != leader' | xargs)
  if daemon_running "$name"; then
    log "$name (pid $pid) still running ${stop_timeout}s after SIG$signal; killing its session"
  elif [[ -n $left ]]; then
    log "$name (pid $pid) exited; killing what its session left: $left"
  fi
  kill_session "$pid"
  rm -f "$pid_dir/$name.pid"
  log "stopped $name"
}

kill_process() {
  local name=$1 pid
  if ! daemon_running "$name"; then
    log "$name is not running"
    return
  fi
  pid=$(daemon_pid "$name")
  log "SIGKILL to $name (pid $pid) and its session: $(session_pids "$pid" | xargs)"
  kill_session "$pid"
  rm -f "$pid_dir/$name.pid"
}

# --- PostgreSQL ---

as_postgres() { (cd / && runuser -u postgres -- "$@"); }

install_postgres() {
  if ! command -v curl >/dev/null; then # the health checks ask the api-server with it
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }
  fi
  [[ -x $pg_bin/postgres ]] && return
  log "installing postgresql-$PG_VERSION"
  # Debian would create and start a cluster "main" on port 5432; this deployment runs its own.
  local conf=/etc/postgresql-common/createcluster.conf created_policy=false
  mkdir -p "$(dirname "$conf")"
  if grep -qE '^\s*create_main_cluster' "$conf" 2>/dev/null; then
    sed -i -E 's/^\s*create_main_cluster.*/create_main_cluster = false/' "$conf"
  else
    echo 'create_main_cluster = false' >>"$conf"
  fi
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    # Package scripts must not start daemons (as in tests/cluster/install-packages.sh).
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=true
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # confold: keep the createcluster.conf written above over the package's.
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold \
    -o Dpkg::Options::=--force-confdef "postgresql-$PG_VERSION" >/dev/null
  [[ $created_policy == false ]] || rm -f /usr/sbin/policy-rc.d
  if pg_lsclusters -h 2>/dev/null | awk '$2 == "main" && $4 ~ /online/' | grep -q .; then
    pg_ctlcluster "$PG_VERSION" main stop || log "could not stop Debian's cluster main"
  fi
}

start_postgres() {
  daemon_running postgres && return
  if [[ ! -s $pgdata/PG_VERSION ]]; then
    rm -rf "$pgdata"
    install -d -o postgres -g postgres -m 0700 "$pgdata"
    as_postgres "$pg_bin/initdb" -D "$pgdata" -U postgres --auth-local=peer \
      --auth-host=scram-sha-256 --encoding=UTF8 --locale=C >>"$log_dir/postgres.log" 2>&1 ||
      die "initdb failed; see $log_dir/postgres.log"
  fi
  install -d -o postgres -g postgres -m 0755 "$pg_socket_dir"
  as_postgres test -x "$pg_socket_dir" ||
    die "the postgres user cannot reach $airflow_state; make its parents searchable (o+x)"
  # postgres refuses to run as root; setpriv drops to its user and execs, keeping the pid.
  start_process postgres "$pg_bin/postgres" \
    setpriv --reuid=postgres --regid=postgres --init-groups "$pg_bin/postgres" -D "$pgdata" \
    -c listen_addresses=127.0.0.1 -c port="$db_port" -c unix_socket_directories="$pg_socket_dir" \
    -c log_line_prefix='%m [%p] %q%u@%d '
  wait_postgres
}

wait_postgres() {
  wait_until "PostgreSQL on 127.0.0.1:$db_port" 60 "$pg_bin/pg_isready" -q -h 127.0.0.1 \
    -p "$db_port" || die "PostgreSQL did not start; see $log_dir/postgres.log"
}

# Postgres' fast shutdown is SIGINT; SIGTERM would wait for Airflow's pooled connections to close.
stop_postgres() { stop_process postgres INT; }

ensure_database() {
  local password
  password=$(secret db_password)
  as_postgres "$pg_bin/psql" -h "$pg_socket_dir" -p "$db_port" -U postgres -d postgres -qtA \
    -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT 'CREATE ROLE airflow LOGIN'
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'airflow')\gexec
ALTER ROLE airflow WITH LOGIN PASSWORD '$password';
SELECT 'CREATE DATABASE airflow OWNER airflow'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'airflow')\gexec
SQL
}

# --- configuration ---

# secret NAME: a random value made once and kept in the state directory (hex: safe in a URL).
secret() {
  local file=$airflow_state/secrets/$1
  if [[ ! -s $file ]]; then
    (umask 077 && mkdir -p "$(dirname "$file")" &&
      od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$file")
  fi
  cat "$file"
}

# A Fernet key (what [core] fernet_key takes): 32 random bytes, URL-safe base64.
fernet_key() {
  local file=$airflow_state/secrets/fernet_key
  if [[ ! -s $file ]]; then
    (umask 077 && mkdir -p "$(dirname "$file")" &&
      head -c 32 /dev/urandom | base64 | tr '+/' '-_' >"$file")
  fi
  cat "$file"
}

env_line() { printf 'export %s=%q\n' "$1" "$2"; }

# The whole configuration, as environment variables (no airflow.cfg to keep in step).
render_env() {
  echo "# Airflow of tests/airflow/airflow.sh; every component sources this file. Rewritten by up."
  env_line AIRFLOW_HOME "$airflow_state/home"
  env_line AIRFLOW__CORE__DAGS_FOLDER "$airflow_state/dags"
  env_line AIRFLOW__CORE__EXECUTOR LocalExecutor
  env_line AIRFLOW__CORE__LOAD_EXAMPLES False
  # Nothing runs until somebody asks: the example DAG is @daily, and unpaused it would start at
  # once, in the middle of the fault tests. make demo and the tests unpause the DAGs they run.
  env_line AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION True
  # 2 cores: a few tasks at once. Deferred tasks hold no slot.
  env_line AIRFLOW__CORE__PARALLELISM 4
  env_line AIRFLOW__CORE__FERNET_KEY "$(fernet_key)"
  env_line AIRFLOW__DATABASE__SQL_ALCHEMY_CONN \
    "postgresql+psycopg2://airflow:$(secret db_password)@127.0.0.1:$db_port/airflow"
  # Anyone who reaches 127.0.0.1 is admin: no login in the UI, GET /auth/token for the REST API.
  env_line AIRFLOW__CORE__AUTH_MANAGER \
    airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
  env_line AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS True
  env_line AIRFLOW__API__HOST 127.0.0.1
  env_line AIRFLOW__API__PORT "$api_port"
  env_line AIRFLOW__API__BASE_URL "$api_url"
  env_line AIRFLOW__API__WORKERS 1
  env_line AIRFLOW__CORE__EXECUTION_API_SERVER_URL "$api_url/execution/"
  # Shared by the components: the scheduler signs task tokens the api-server checks, and the
  # api-server signs log requests to the scheduler's and triggerer's log servers.
  env_line AIRFLOW__API_AUTH__JWT_SECRET "$(secret jwt_secret)"
  env_line AIRFLOW__API__SECRET_KEY "$(secret api_secret_key)"
  # A new or changed DAG file is parsed within seconds, not minutes.
  env_line AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL 5
  env_line AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL 10
  # A task whose worker was SIGKILLed fails (and retries) within ~25s instead of 5 minutes; the
  # supervisor heartbeats every 5s ([workers] min_heartbeat_interval), so 20s is four misses.
  env_line AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT 20
  env_line AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL 5
  # A killed scheduler's queued tasks are reset by its successor within ~30s, not 5 minutes.
  env_line AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD 20
  env_line AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL 30
  # A triggerer takes over the triggers of one whose heartbeat (every 5s) is this old: a restarted
  # triggerer adopts what its SIGKILLed predecessor ran within ~15s.
  env_line AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD 15
  # The OpenLineage provider writes each event as a line of this file, for tests to check.
  env_line AIRFLOW__OPENLINEAGE__NAMESPACE kubedbt-tests
  env_line AIRFLOW__OPENLINEAGE__TRANSPORT \
    "{\"type\": \"file\", \"log_file_path\": \"$airflow_state/openlineage.jsonl\", \"append\": true}"
  # Metrics (Airflow's and kubedbt's) go to statsd-sink, which appends them to statsd.log. Tags
  # ride in the name, InfluxDB style (name,tag=value:1|c), so a plain StatsD line carries them.
  env_line AIRFLOW__METRICS__STATSD_ON True
  env_line AIRFLOW__METRICS__STATSD_HOST 127.0.0.1
  env_line AIRFLOW__METRICS__STATSD_PORT "$statsd_port"
  env_line AIRFLOW__METRICS__STATSD_PREFIX airflow
  env_line AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED True
  env_line AIRFLOW_CONN_KUBERNETES_DEFAULT \
    "{\"conn_type\": \"kubernetes\", \"extra\": {\"kube_config_path\": \"$airflow_kubeconfig\"}}"
}

# write_env: (re)write the env file; succeeds when its content changed.
write_env() {
  local tmp
  tmp=$(mktemp "$env_file.XXXXXX") # mode 0600: it holds the database password and the secrets
  render_env >"$tmp"
  if cmp -s "$tmp" "$env_file"; then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$env_file"
}

load_env() {
  [[ -s $env_file ]] || die "no deployment in $airflow_state; run tests/airflow/airflow.sh up"
  set -a
  # shellcheck source=/dev/null
  source "$env_file"
  set +a
}

# The DAG folder: a link to every DAG file of the repository's two DAG folders. An edited file is
# parsed again within seconds; a new or removed file needs another `up`.
refresh_dag_links() {
  local dir=$airflow_state/dags src name link
  local -A want=()
  mkdir -p "$dir" "$repo/tests/deployment/dags"
  for src in "$repo"/examples/dags/*.py "$repo"/tests/deployment/dags/*.py; do
    [[ -e $src ]] || continue
    name=$(basename "$src")
    [[ -z ${want[$name]:-} ]] || die "two DAG files named $name: ${want[$name]} and $src"
    want[$name]=$src
  done
  for link in "$dir"/*; do
    [[ -L $link ]] || continue
    [[ ${want[$(basename "$link")]:-} == "$(readlink "$link")" ]] || rm -f "$link"
  done
  for name in "${!want[@]}"; do
    [[ $(readlink "$dir/$name" 2>/dev/null) == "${want[$name]}" ]] ||
      ln -sfn "${want[$name]}" "$dir/$name"
  done
}

# `airflow db migrate` once per Airflow version: a marker records the version last migrated to.
migrate_db() {
  local version marker=$airflow_state/home/.migrated
  version=$("$python" -c 'import importlib.metadata as m; print(m.version("apache-airflow-core"))')
  [[ $(cat "$marker" 2>/dev/null) == "$version" ]] && return
  log "airflow db migrate (Airflow $version), log in $log_dir/migrate.log"
  mkdir -p "$airflow_state/home"
  "$python" "$venv/bin/airflow" db migrate >>"$log_dir/migrate.log" 2>&1 ||
    die "airflow db migrate failed; see $log_dir/migrate.log"
  echo "$version" >"$marker"
}

# --- Airflow's identity in the cluster ---

apply_identity() {
  kc apply -f - <<'EOF'
apiVersion: v1
kind: Namespace
metadata:
  name: airflow
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: airflow
  namespace: airflow
EOF
}

# Namespace and ServiceAccount airflow, and a kubeconfig holding a fresh 48h token for it. The
# provider's hook reads the file on each connection, so running components pick the new token up.
cluster_identity() {
  kc --request-timeout=5s get --raw /readyz >/dev/null 2>&1 ||
    die "the cluster does not answer with $admin_kubeconfig (make cluster-up)"
  local server ca token tmp
  # Retried: a namespace that `down` deleted a moment ago may still be terminating.
  wait_until "namespace and ServiceAccount airflow" 90 apply_identity ||
    die "could not create the namespace and ServiceAccount airflow"
  token=$(kc -n airflow create token airflow --duration 48h)
  server=$(kc config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kc config view --raw --minify \
    -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  tmp=$(mktemp "$airflow_kubeconfig.XXXXXX") # 0600: it holds the token
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: kubedbt
    cluster:
      server: $server
      certificate-authority-data: $ca
users:
  - name: airflow
    user:
      token: $token
contexts:
  - name: airflow
    context:
      cluster: kubedbt
      user: airflow
current-context: airflow
EOF
  mv "$tmp" "$airflow_kubeconfig"
}

# --- Airflow's components ---

health() { curl -fsS --max-time 5 "$api_url/api/v2/monitor/health"; }

# component_healthy NAME [SINCE]: the api-server's health endpoint reports NAME healthy, with a
# heartbeat at or after SINCE (UTC, ISO 8601) so that a process killed a moment ago, whose last
# heartbeat is still fresh, does not count for the one just started.
component_healthy() {
  local name=$1 since=${2:-} key
  case $name in
    api-server)
      health | jq -e '.metadatabase.status == "healthy"'
      return
      ;;
    dag-processor) key=dag_processor ;;
    *) key=$name ;;
  esac
  health | jq -e --arg key "$key" --arg since "$since" \
    '.[$key].status == "healthy" and ((.[$key]["latest_" + $key + "_heartbeat"] // "") >= $since)'
}

wait_healthy() {
  local name=$1 since=${2:-} deadline=$((SECONDS + start_timeout))
  until component_healthy "$name" "$since" >/dev/null 2>&1; do
    daemon_running "$name" || die "$name exited; see $log_dir/$name.log:
$(tail -n 30 "$log_dir/$name.log")"
    if ((SECONDS >= deadline)); then
      die "$name not healthy after ${start_timeout}s; see $log_dir/$name.log:
$(tail -n 30 "$log_dir/$name.log")"
    fi
    sleep 1
  done
  log "$name healthy"
}

# start_component NAME: start it unless it runs; prints the UTC time it was started at, if it was.
start_component() {
  local name=$1 since
  daemon_running "$name" && return
  load_env
  since=$(date -u +%Y-%m-%dT%H:%M:%S.%6N)
  # KUBECONFIG: nothing in Airflow may fall back to the admin kubeconfig the Makefile exports.
  start_process "$name" "$python" \
    env KUBECONFIG="$airflow_kubeconfig" "$python" "$venv/bin/airflow" "$name"
  echo "$since"
}

running_components() {
  local name
  for name in "${airflow_components[@]}"; do
    daemon_running "$name" && echo "$name"
  done
  return 0
}

deployment_healthy() {
  daemon_running postgres && (($(running_components | wc -l) == ${#airflow_components[@]})) &&
    health | jq -e '[.metadatabase, .scheduler, .triggerer, .dag_processor]
    | all(.status == "healthy")' >/dev/null 2>&1
}

print_hints() {
  log "Airflow is up: UI and REST API at $api_url (everyone is admin, no login)"
  log "  component logs in $log_dir, task logs in $airflow_state/home/logs"
  log "  metrics (StatsD, 127.0.0.1:$statsd_port) in $statsd_log"
  log "  its CLI: (source $env_file && $venv/bin/airflow dags list)"
  echo "$api_url"
}

# The StatsD listener: not an Airflow component, so not in the health report; `up` starts it
# before the components, which send to it from their first metric on.
start_statsd_sink() {
  daemon_running statsd-sink && return
  start_process statsd-sink "$python" \
    "$python" "$repo/tests/airflow/statsd_sink.py" --port "$statsd_port" --output "$statsd_log"
}

# --- commands ---

cmd_up() {
  [[ $(id -u) == 0 ]] || die "must run as root (it installs PostgreSQL and runs it as postgres)"
  [[ -x $python ]] || die "no $python (make venv)"
  mkdir -p "$airflow_state" "$pid_dir" "$log_dir"
  chmod 0755 "$airflow_state"
  refresh_dag_links
  cluster_identity
  local name i
  if write_env && [[ -n $(running_components) ]]; then
    log "$env_file changed; restarting $(running_components | xargs)"
    for ((i = ${#airflow_components[@]} - 1; i >= 0; i--)); do
      stop_process "${airflow_components[i]}"
    done
  fi
  start_statsd_sink >&2
  if deployment_healthy; then
    print_hints
    return
  fi
  {
    install_postgres
    start_postgres
    ensure_database
    load_env
    migrate_db
    local -A since=()
    for name in "${airflow_components[@]}"; do
      since[$name]=$(start_component "$name")
    done
    for name in "${airflow_components[@]}"; do
      wait_healthy "$name" "${since[$name]}"
    done
  } >&2
  print_hints
}

cmd_down() {
  local name was_there=false
  [[ -d $airflow_state ]] && was_there=true
  # The api-server last: tasks that finish while the others stop still report to it.
  for name in scheduler dag-processor triggerer; do
    stop_process "$name" &
  done
  wait
  stop_process api-server
  stop_process statsd-sink
  stop_postgres
  if [[ -s $admin_kubeconfig ]] &&
    kc --request-timeout=5s get namespace airflow >/dev/null 2>&1; then
    was_there=true
    kc delete namespace airflow --timeout=60s >/dev/null 2>&1 ||
      log "could not delete the namespace airflow"
  fi
  [[ $KUBEDBT_STATE == /*/* ]] || die "refusing to remove under KUBEDBT_STATE=$KUBEDBT_STATE"
  rm -rf "$airflow_state"
  [[ $was_there == false ]] || log "Airflow removed"
}

cmd_status() {
  local name healthy=true report
  for name in postgres statsd-sink "${airflow_components[@]}"; do
    if daemon_running "$name"; then
      printf '%-16s running (pid %s)\n' "$name" "$(daemon_pid "$name")"
    else
      printf '%-16s NOT RUNNING\n' "$name"
      healthy=false
    fi
  done
  echo
  if report=$(health 2>/dev/null); then
    jq -r 'to_entries[] | "\(.key): \(.value.status // "unknown")" + ([.value | to_entries[]
      | select(.key | startswith("latest_")) | " (\(.value))"] | join(""))' <<<"$report"
    deployment_healthy || healthy=false
  else
    echo "no health report from $api_url/api/v2/monitor/health"
    healthy=false
  fi
  echo
  if [[ $healthy == true ]]; then
    echo "Airflow healthy at $api_url; logs in $log_dir"
  else
    echo "Airflow NOT healthy; logs in $log_dir"
    return 1
  fi
}

cmd_start() {
  local name=$1 since
  if [[ $name == postgres ]]; then
    start_postgres
    return
  fi
  daemon_running postgres || die "PostgreSQL is not running (tests/airflow/airflow.sh up)"
  since=$(start_component "$name")
  if [[ $name != api-server ]] && ! daemon_running api-server; then
    log "api-server not running: not waiting for $name to report healthy"
    return
  fi
  wait_healthy "$name" "$since"
}

cmd_stop() {
  if [[ $1 == postgres ]]; then
    stop_postgres
  else
    stop_process "$1"
  fi
}

main() {
  (($# >= 1)) || usage
  local command=$1
  shift
  case $command in
    up | down | status)
      (($# == 0)) || usage
      "cmd_$command"
      ;;
    start | stop | kill | restart)
      (($# == 1)) || usage
      case $1 in
        scheduler | dag-processor | triggerer | api-server | postgres) ;;
        *) die "unknown component $1 (scheduler, dag-processor, triggerer, api-server, postgres)" ;;
      esac
      case $command in
        start) cmd_start "$1" ;;
        stop) cmd_stop "$1" ;;
        kill) kill_process "$1" ;;
        restart)
          cmd_stop "$1"
          cmd_start "$1"
          ;;
      esac
      ;;
    *) usage ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
