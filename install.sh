#!/usr/bin/env bash
# Install toon3d into ./.venv from scratch: the pinned CPU torch first (a looser torch pulls a
# multi-GB CUDA build), then the package with its test extras, then the facesjs tool (Node).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test]"
if [ -f tools/facesjs/package.json ]; then
  if command -v npm >/dev/null; then
    npm ci --prefix tools/facesjs --silent --no-audit --no-fund
  else
    echo "install.sh: warning: npm not found; 'toon3d data cartoons' needs Node.js >= 18 (apt-get install nodejs npm)" >&2
  fi
fi
echo "install.sh: toon3d installed in .venv"
