#!/usr/bin/env bash
# Creates .venv with torch (CPU wheel first), the project (editable) and its gui and dev extras,
# and, as root, the Debian libraries napari needs to render under a virtual X server.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DEB_PKGS="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0 libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1 libdbus-1-3"

missing_debs() {
    local missing=""
    for p in $DEB_PKGS; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    echo "$missing"
}

missing=$(missing_debs)
if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian packages:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "setup: napari needs these Debian packages to render without a screen:$missing"
        echo "setup: install them with: sudo apt-get install$missing"
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv.partial
    rm -rf .venv
    mv .venv.partial .venv
fi
VPY=.venv/bin/python
$VPY -m pip install -q --upgrade pip
# torch first: the CPU wheel on local disk; a plain 'torch' requirement would pull a CUDA build.
$VPY -m pip install -q "torch==2.13.0"
$VPY -m pip install -q -e ".[gui,dev]"
touch .venv/.setup-done
echo "setup: done ($($VPY -c 'import torch, synth_core; print("torch", torch.__version__, "synth_core", synth_core.__version__)'))"
