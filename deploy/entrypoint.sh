#!/usr/bin/env bash
# Container entrypoint for every DenseNAS role. One image, four subcommands:
#   api         wait for the database, run migrations, serve the REST API on 0.0.0.0
#   migrate     wait for the database and run migrations, then exit (a Kubernetes init job)
#   ray-head    start a Ray head node in the foreground (GCS on $RAY_PORT, dashboard on 8265,
#               Ray Client server on $RAY_CLIENT_SERVER_PORT, default 10001)
#   ray-worker  join the head's GCS at $RAY_ADDRESS (host:port) and block
# The api role is a Ray *Client* of the cluster (RAY_ADDRESS=ray://<head>:10001): a driver given
# the GCS address (<head>:6379) needs a raylet on its own host, which the API container has not.
# Extra arguments are handed to `ray start` / `densenas serve` (e.g. --node-ip-address).
# Anything else is executed as given (e.g. `bash`, `densenas jobs`).
set -euo pipefail

# Cluster mode stays on (Ray's default on Linux): RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 would turn
# multi-node off (`ray start --address` exits 1, the head listens on loopback only). Only the
# embedded single-machine Ray sets it, in the process that starts it (workers/ray_job.py).
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"

# jemalloc keeps PyTorch CPU step times stable (glibc malloc makes them swing up to ~10x).
jemalloc="/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2"
if [ -z "${LD_PRELOAD:-}" ] && [ -f "$jemalloc" ] && [ "${DENSENAS_JEMALLOC:-1}" = "1" ]; then
  export LD_PRELOAD="$jemalloc"
fi

RAY_PORT="${RAY_PORT:-6379}"
RAY_CLIENT_SERVER_PORT="${RAY_CLIENT_SERVER_PORT:-10001}"
MIGRATE_RETRIES="${DENSENAS_MIGRATE_RETRIES:-30}"

log() { echo "[entrypoint] $*" >&2; }

wait_and_migrate() {
  # The database may still be starting (compose, a fresh Kubernetes pod): retry, then give up.
  local i
  for ((i = 1; i <= MIGRATE_RETRIES; i++)); do
    if densenas migrate; then
      return 0
    fi
    log "migrations failed (attempt $i/$MIGRATE_RETRIES); retrying in 2 s"
    sleep 2
  done
  log "database not ready after $MIGRATE_RETRIES attempts"
  return 1
}

ray_resource_flags() {
  # Optional explicit resources; Ray detects CPUs/GPUs of the container otherwise.
  local flags=()
  if [ -n "${RAY_NUM_CPUS:-}" ]; then flags+=("--num-cpus=${RAY_NUM_CPUS}"); fi
  if [ -n "${RAY_NUM_GPUS:-}" ]; then flags+=("--num-gpus=${RAY_NUM_GPUS}"); fi
  if [ -n "${RAY_OBJECT_STORE_MEMORY:-}" ]; then
    flags+=("--object-store-memory=${RAY_OBJECT_STORE_MEMORY}")
  fi
  echo "${flags[@]:-}"
}

warn_single_machine_mode() {
  if [ "${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-1}" = "0" ]; then
    log "warning: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is 0, which turns Ray's multi-node mode" \
        "off: this node cannot form a cluster (unset it)"
  fi
}

cmd="${1:-api}"
if [ $# -gt 0 ]; then shift; fi

case "$cmd" in
  api)
    wait_and_migrate
    exec densenas serve --host 0.0.0.0 --port "${DENSENAS_PORT:-8000}" "$@"
    ;;
  migrate)
    wait_and_migrate
    ;;
  ray-head)
    warn_single_machine_mode
    # shellcheck disable=SC2046
    exec ray start --head --block \
      --port="${RAY_PORT}" \
      --ray-client-server-port="${RAY_CLIENT_SERVER_PORT}" \
      --dashboard-host=0.0.0.0 \
      --disable-usage-stats \
      $(ray_resource_flags) "$@"
    ;;
  ray-worker)
    warn_single_machine_mode
    address="${RAY_ADDRESS:-ray-head:${RAY_PORT}}"
    if [[ "$address" == ray://* ]]; then
      # A node joins the GCS, not the Ray Client server: keep the host, use $RAY_PORT.
      address="${address#ray://}"
      address="${address%:*}:${RAY_PORT}"
    fi
    # shellcheck disable=SC2046
    exec ray start --block --address="${address}" \
      --disable-usage-stats \
      $(ray_resource_flags) "$@"
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
