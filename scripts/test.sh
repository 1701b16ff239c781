#!/usr/bin/env bash
# The whole test suite: unit, integration (real PostgreSQL, real local Ray) and browser (real
# headless Chromium). Installs what is missing and starts PostgreSQL first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
eval "$(bash scripts/pg_start.sh --print-env)"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export DENSENAS_CHROMIUM=${DENSENAS_CHROMIUM:-/usr/bin/chromium}
mkdir -p artifacts
# Timing-sensitive tests (browser, real Ray, SSE) share 2 cores with PostgreSQL, Ray and
# Chromium; a failure is retried up to twice and reported as a rerun, never hidden.
exec .venv/bin/pytest -p no:cacheprovider --timeout=900 --reruns 2 --reruns-delay 2 "$@"
