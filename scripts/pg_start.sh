#!/usr/bin/env bash
# Start the local PostgreSQL 15 cluster (idempotent) and make sure the test role and database
# exist. With --print-env, print the `export DENSENAS_TEST_PG_URL=...` line for eval.
set -euo pipefail
PG_USER=${PG_USER:-densenas}
PG_PASS=${PG_PASS:-densenas}
PG_DB=${PG_DB:-densenas_test}
PORT=${PG_PORT:-5432}

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "pg_start: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 1
fi
ver=$(pg_lsclusters -h | awk 'NR==1{print $1}')
name=$(pg_lsclusters -h | awk 'NR==1{print $2}')
if [ -z "$ver" ]; then
  pg_createcluster 15 main >/dev/null
  ver=15; name=main
fi
if ! pg_lsclusters -h | awk 'NR==1{print $4}' | grep -q online; then
  pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || { echo "pg_start: PostgreSQL did not come up" >&2; exit 1; }

as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }
as_pg "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1 || \
  as_pg "psql -qc \"CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASS' CREATEDB\"" >&2
as_pg "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='$PG_DB'\"" | grep -q 1 || \
  as_pg "createdb -O $PG_USER $PG_DB" >&2

url="postgresql+psycopg://$PG_USER:$PG_PASS@127.0.0.1:$PORT/$PG_DB"
if [ "${1:-}" = "--print-env" ]; then
  echo "export DENSENAS_TEST_PG_URL='$url'"
else
  echo "PostgreSQL ready: $url" >&2
fi
