#!/usr/bin/env bash
# Install everything this checkout needs on a Debian/Ubuntu machine with Python 3.11:
# system packages (PostgreSQL, Chromium for browser tests, jemalloc, the Fashion-MNIST package
# where the distribution has it) and the project with its test extras into ./.venv.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v apt-get >/dev/null 2>&1; then
  want=(python3-venv postgresql chromium chromium-driver libjemalloc2)
  missing=()
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  # Offline copy of Fashion-MNIST (only some mirrors carry it; torchvision downloads otherwise).
  dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || missing+=("dataset-fashion-mnist?")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[install] apt packages: ${missing[*]}"
    $SUDO apt-get update -qq
    req=(); opt=()
    for p in "${missing[@]}"; do
      if [[ "$p" == *"?" ]]; then opt+=("${p%\?}"); else req+=("$p"); fi
    done
    if [ ${#req[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${req[@]}"
    fi
    for p in "${opt[@]}"; do
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" \
        || echo "[install] $p not available here; Fashion-MNIST will be downloaded by torchvision"
    done
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/pip ]; then
  echo "[install] creating .venv with $($PY --version)"
  rm -rf .venv
  "$PY" -m venv .venv
fi
stamp=.venv/.densenas-installed
want_hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want_hash" ]; then
  echo "[install] pip install -e '.[test]' (torch and torchvision come from the local wheel cache where present)"
  .venv/bin/pip install -q --upgrade pip wheel
  .venv/bin/pip install -q -e '.[test]'
  echo "$want_hash" > "$stamp"
fi
echo "[install] ready: $(.venv/bin/python -c 'import torch, ray; print("torch", torch.__version__, "ray", ray.__version__)')"
