#!/usr/bin/env bash
# Short GPU check for the training job: CMAE ViT-B/8 at 64 px, a few hundred optimiser steps in bf16 on the embedded
# dataset, through the `cmae_pretrain` CLI. Prints the run summary, images/s and peak GPU memory.
# Usage: bash tools/gpu_check.sh [OUT_DIR]     (about 5 min on one H100; needs no network)
set -euo pipefail
OUT=${1:-runs/gpu_check}
rm -rf "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# 2000 images / batch 64 = 31 steps per epoch; 8 epochs = 248 steps. Figures and kNN are on (they are part of the job).
python - "$OUT" <<'PY'
import sys, json, time, torch
from cmae_course.cli import cmae_pretrain
out = sys.argv[1]
torch.cuda.reset_peak_memory_stats()
t0 = time.time()
s = cmae_pretrain(preset='paper', method='cmae', epochs=8, warmup=1, n_train=2000, bs=64, precision='bf16',
                  device='cuda', ccrop_warmup=4, ccrop_interval=2, workers=4, out=out)
hist = json.load(open(f'{out}/metrics.json'))
print('per-epoch img/s:', [round(h['img_s'], 1) for h in hist])
print(f"steps {s['opt_steps']}  best img/s {max(h['img_s'] for h in hist):.1f}  "
      f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB  wall {time.time() - t0:.0f} s")
PY
