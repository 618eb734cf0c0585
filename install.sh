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
# Data only, never imported (their imports need torchvision/onnxruntime): the LPIPS v0.1 heads
# (lpips/weights/v0.1/vgg.pth) and insightface's 6-face test photo (data/images/t1.jpg).
.venv/bin/pip install -q --no-deps lpips==0.1.4 insightface==2.1 ||
  echo "install.sh: warning: lpips/insightface not installed; LPIPS needs --lpips-vgg and the t1.jpg tests skip" >&2
if [ -f tools/facesjs/package.json ]; then
  if command -v npm >/dev/null; then
    npm ci --prefix tools/facesjs --silent --no-audit --no-fund
  else
    echo "install.sh: warning: npm not found; 'toon3d data cartoons' needs Node.js >= 18 (apt-get install nodejs npm)" >&2
  fi
fi
# The avatar viewer: three.js bundled by esbuild into tools/viewer/dist/viewer.js (not in git),
# and the Khronos glTF validator.
if [ -f tools/viewer/package.json ]; then
  if command -v npm >/dev/null; then
    npm ci --prefix tools/viewer --silent --no-audit --no-fund
    npm run build --prefix tools/viewer --silent
  else
    echo "install.sh: warning: npm not found; viewer.html and the glTF validator need Node.js >= 18 (apt-get install nodejs npm)" >&2
  fi
fi
# Opt-in test extra: headless Chromium + playwright for the viewer test (tests/test_io_viewer.py
# skips without them). Use `bash install.sh --with-browser` or TOON3D_TEST_BROWSER=1.
if [ "${TOON3D_TEST_BROWSER:-0}" = 1 ] || [[ " $* " == *" --with-browser "* ]]; then
  .venv/bin/pip install -q -e ".[test,browser]"
  if ! command -v chromium >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } ||
        echo "install.sh: warning: apt-get could not install chromium; the viewer test will be skipped" >&2
    else
      echo "install.sh: warning: chromium not found; install Debian's chromium (sudo apt-get install chromium) for the viewer test" >&2
    fi
  fi
fi
echo "install.sh: toon3d installed in .venv"
