#!/usr/bin/env python
"""Why the scheduled linear probe (`probes.linear_probe`) is a hand-written loop and not a fastai `Learner`: the same
linear head on the same features (random, 5000 x 192, 10 classes), SGD for 100 epochs at batch 256, timed both ways in
one run; the ratio is printed.

    OMP_NUM_THREADS=1 python tools/bench_probe_loop.py
"""
import time, warnings
warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
import torch, torch.nn.functional as F
from fastai.learner import Learner
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.optimizer import SGD
from cmae_course.probes import linear_probe, linear_head

torch.manual_seed(0); torch.set_num_threads(1)
N, D, C = 5000, 192, 10
x, y = torch.randn(N, D), torch.randint(0, C, (N,))
xv, yv = torch.randn(1000, D), torch.randint(0, C, (1000,))
t0 = time.perf_counter()
linear_probe(x, y, xv, yv, epochs=100, bs=256, opt='sgd')
t_loop = time.perf_counter() - t0
dls = DataLoaders(DataLoader(list(zip(x, y)), bs=256, shuffle=True, drop_last=True),
                  DataLoader(list(zip(xv, yv)), bs=1000), device='cpu')
learn = Learner(dls, linear_head(D, C), loss_func=F.cross_entropy, opt_func=SGD)
t0 = time.perf_counter()
with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(100, 0.1)
t_learn = time.perf_counter() - t0
print(f"hand loop {t_loop:.2f} s, fastai Learner {t_learn:.2f} s: Learner / loop = {t_learn / t_loop:.1f}x "
      f"(100 epochs, {N}x{D} features, batch 256, 1 thread)")
