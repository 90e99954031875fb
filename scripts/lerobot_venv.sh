#!/usr/bin/env bash
# A separate virtual environment with the real `lerobot` package (and torch), for the slow test
# that checks LeRobotDataset loads what `expoft data export lerobot` writes. expoft itself never
# needs lerobot or torch. Usage: bash scripts/lerobot_venv.sh [DIR]  (default ~/.cache/expoft/lerobot-venv)
# torch==2.13.0 is the CPU build here (other torch versions pull GBs of CUDA wheels). lerobot 0.4.4 caps
# torch below 2.11, so it is installed without its dependency pins, and its runtime dependencies by hand.
set -euo pipefail
VENV=${1:-${HOME}/.cache/expoft/lerobot-venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" --no-deps torchvision==0.28.0
"${PIP[@]}" "datasets>=4,<5" pandas "huggingface-hub>=0.34.2,<0.36" "av>=15,<16" jsonlines draccus==0.10.0 \
    termcolor deepdiff einops "packaging<26" numpy pillow gymnasium imageio
"${PIP[@]}" --no-deps lerobot==0.4.4
echo "$VENV/bin/python"
