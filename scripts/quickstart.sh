#!/usr/bin/env bash
# The main job: install, then run a real DenseNAS search on the embedded default
# (SQLite file + local in-process Ray + Fashion-MNIST) through the REST API, watch it live,
# and print the derived architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
exec .venv/bin/densenas demo "$@"
