#!/usr/bin/env bash
# The device run: install the carried fastai wheels (the GPU image has torch but no fastai), then tools/gpu_check.py.
# Needs `.whl/` (fastai 2.8.7, fastcore 1.14.5, fasttransform, plum-dispatch, beartype, fastprogress 1.0.3, fastdownload; for cp312)
# and writes $OUT/gpu_check.json.   Usage: bash tools/gpu_check.sh
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore XDG_CACHE_HOME=/tmp/cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 tools/gpu_check.py --out "${OUT:-runs/gpu_check}" 2>&1 | grep -v "Epoch [0-9]*/[0-9]* :"
