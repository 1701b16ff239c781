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
# Lint, format and types first (seconds): ruff over the repository, mypy strict on the core and
# checked on the service and the workers (pyproject.toml). Skip with DENSENAS_SKIP_LINT=1 while
# iterating on one test.
if [[ "${DENSENAS_SKIP_LINT:-0}" != "1" ]]; then
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy densenas_core service workers
fi
# Timing-sensitive tests share 2 cores with PostgreSQL, Ray and Chromium: those modules (real
# Ray, the fault drills and deploy rehearsal, the browser, the SSE streams) and the tests that
# time a wake-up carry @pytest.mark.flaky(reruns=2, reruns_delay=2) (pytest-rerunfailures), so
# only their failures are retried, up to twice, and reported as reruns, never hidden. Every
# other test fails at its first failure.
exec .venv/bin/pytest -p no:cacheprovider --timeout=900 "$@"
