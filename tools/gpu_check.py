#!/usr/bin/env python
"""Short GPU check of the training step, the benchmark and the paper-scale recipes (about 5 minutes on one H100/H200).

    python tools/gpu_check.py [--out DIR] [--quick]

Stages, each printed and appended to DIR/gpu_check.json as soon as it finishes (so a cut-off run still reports):
  1. `cmae_bench` on CUDA: CMAE vs MAE (ViT-B/8, 64 px, batch 64, bf16) and MAE bf16 vs plain fp32 eager;
  2. `cmae_pretrain --preset paper` (CMAE, ViT-B/8, dec512d8b, bf16) for a few epochs on the embedded dataset, with figures and
     the closing evaluation: the whole job on the GPU;
  3. one epoch of each Table 1 recipe (MoCo-v1 ResNet-18 batch 512, MoCo-v2 ResNet-50 batch 128, MAE, CMAE) to measure images/s and
     estimate the wall time of the paper's schedule on Tiny-ImageNet (100,000 images).
`--quick` shrinks everything to run on a CPU in a minute (to test this script, not to measure).
"""
import argparse, contextlib, io, json, sys, time
from pathlib import Path
import torch

ap = argparse.ArgumentParser()
ap.add_argument('--out', default='runs/gpu_check')
ap.add_argument('--quick', action='store_true')
a = ap.parse_args()
out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
dev = 'cpu' if a.quick else 'cuda'
report = dict(torch=torch.__version__, device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', stages={})

def save(name, value):
    report['stages'][name] = value
    (out/'gpu_check.json').write_text(json.dumps(report, indent=1))
    print(f'== {name}: {json.dumps(value)[:2000]}', flush=True)

def captured_json(fn, **kw):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): fn(**kw)
    return json.loads(buf.getvalue())

from cmae_course.bench import cmae_bench
from cmae_course.cli import cmae_pretrain
from cmae_course.data import default_dataset

t0 = time.time(); default_dataset(); save('dataset_seconds', round(time.time() - t0, 1))

# 1. benchmark
bk = dict(arch='vit_tiny', depth=2, steps=2, warmup=1, bs=8) if a.quick else dict(arch='vit_base', steps=10, warmup=3, bs=64)
for name, kw in (('bench_cmae_vs_mae_bf16', dict(method='cmae', compare_mae=True, precision='bf16')),
                 ('bench_mae_bf16_vs_fp32_plain', dict(method='mae', baseline=True, precision='bf16'))):
    t0 = time.time()
    if a.quick: kw['precision'] = 'fp32'                     # CPUs without native bf16 run it ~50x slower
    try: save(name, {**captured_json(cmae_bench, device=dev, **kw, **bk), 'seconds': round(time.time() - t0, 1)})
    except Exception as e: save(name, dict(error=f'{type(e).__name__}: {e}'))

# 2. the whole job at paper size, short
job = dict(preset='tiny', epochs=2, n_train=128, bs=32) if a.quick else dict(preset='paper', epochs=6, warmup=1, n_train=5000, bs=64,
                                                                          ccrop_warmup=3, ccrop_interval=2)
t0 = time.time()
try:
    s = cmae_pretrain(method='cmae', device=dev, precision='bf16' if not a.quick else 'fp32', workers=4, out=str(out/'cmae_paper'), **job)
    hist = json.loads((out/'cmae_paper'/'metrics.json').read_text())
    save('cmae_paper_job', {**s, 'img_s_per_epoch': [round(h['img_s'], 1) for h in hist],
                            'peak_gpu_gib': round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev == 'cuda' else None,
                            'files': sorted(p.name for p in (out/'cmae_paper').iterdir()), 'seconds': round(time.time() - t0, 1)})
except Exception as e: save('cmae_paper_job', dict(error=f'{type(e).__name__}: {e}'))

# 3. one epoch of each Table 1 recipe -> images/s -> estimated hours for the paper's schedule on 100,000 images
recipes = {'MoCo-v1': dict(method='mocov1', bs=512, epochs_paper=500), 'MoCo-v2': dict(method='mocov2', bs=128, epochs_paper=200),
           'MAE': dict(method='mae', bs=64, epochs_paper=300), 'CMAE': dict(method='cmae', bs=64, epochs_paper=300)}
for name, r in recipes.items():
    ep = r.pop('epochs_paper')
    kw = dict(preset='tiny', n_train=128, bs=32) if a.quick else dict(preset='paper', n_train=5000, **{k: v for k, v in r.items() if k == 'bs'})
    t0 = time.time()
    try:
        torch.cuda.reset_peak_memory_stats() if dev == 'cuda' else None
        s = cmae_pretrain(method=r['method'], epochs=2, warmup=0, device=dev, precision='bf16' if not a.quick else 'fp32', workers=4,
                          probe=False, figures=False, out=str(out/r['method']), **kw)
        img_s = json.loads((out/r['method']/'metrics.json').read_text())[-1]['img_s']     # 2nd epoch: warm
        save(f'recipe_{name}', dict(method=r['method'], bs=kw['bs'], img_s=round(img_s, 1), paper_epochs=ep,
                                    est_hours_100k=round(100_000 * ep / img_s / 3600, 1),
                                    peak_gpu_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev == 'cuda' else None,
                                    seconds=round(time.time() - t0, 1)))
    except Exception as e: save(f'recipe_{name}', dict(error=f'{type(e).__name__}: {e}'))
print('done', flush=True)
