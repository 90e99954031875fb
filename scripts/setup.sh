#!/usr/bin/env bash
# Create ./.venv (once) and install expoft with its pinned dependencies (CPU-only JAX).
# Also installs the system libraries for offscreen rendering when they are missing (Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# MuJoCo renders offscreen through EGL (pixel observations, `expoft data render`, videos): it needs
# libEGL (libegl1), Mesa's EGL driver (libegl-mesa0) with its renderers (libgl1-mesa-dri), and libGL.
RENDER_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1)

render_libs_missing() {
    local lib known status
    # (captured first: `ldconfig -p | grep -q` can fail under pipefail when grep stops reading early)
    known=$("$(command -v ldconfig || echo /sbin/ldconfig)" -p 2>/dev/null || true)
    for lib in libEGL.so.1 libEGL_mesa.so.0 libGL.so.1; do
        grep -qF "$lib" <<<"$known" || return 0
    done
    if command -v dpkg-query >/dev/null 2>&1; then
        status=$(dpkg-query -W -f='${Status}' libgl1-mesa-dri 2>/dev/null || true)
        [[ "$status" == *"install ok installed"* ]] || return 0
    fi
    return 1
}

render_warning() {
    echo "WARNING: $1. Pixel observations, \`expoft data render\`, videos and their tests need offscreen" \
        "rendering: install ${RENDER_PACKAGES[*]} (apt-get, as root), or set MUJOCO_GL=osmesa with libosmesa6." >&2
}

install_render_libs() {
    render_libs_missing || return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        render_warning "the EGL libraries for offscreen rendering are missing and this is not a Debian/Ubuntu system"
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            render_warning "the EGL libraries are missing and installing them needs root (no sudo here)"
            return 0
        fi
        sudo=(sudo -n)  # never wait for a password prompt
    fi
    echo "Installing the system libraries for offscreen rendering: ${RENDER_PACKAGES[*]}" >&2
    if ! { ${sudo[@]+"${sudo[@]}"} apt-get update -qq \
        && ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${RENDER_PACKAGES[@]}"; }; then
        render_warning "installing the EGL libraries failed"
        return 0
    fi
    if render_libs_missing; then
        render_warning "the EGL libraries are still missing after apt-get install"
    fi
}

install_render_libs

PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), f"expoft needs Python >= 3.11, found {sys.version.split()[0]}"'
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
