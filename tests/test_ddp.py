"""Two CPU processes (gloo) train a tiny CMAE with `ssl_learner`'s DDP path for a few iterations; the first step's loss
(averaged over the ranks) and the weights after that step must equal a single-process run on the same global batch.

Run by pytest, which launches this same file under `torch.distributed.run` (torchrun) as the worker."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

N_ITEMS, BS, WORLD = 16, 4, 2           # per-process batch 4 -> global batch 8; 16 items -> 2 iterations per rank
LR = 1e-3


def make_model():
    "The model under test: tiny CMAE (location task off: its random PE drop is drawn inside the model, per process)."
    torch.manual_seed(0)
    from cmae_course import vit, decoders
    enc = vit.vit_tiny(img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)
    dec = decoders.create_decoder('transformer', embed_dim=32, grid_size=enc.grid_size, patch_size=8, dim=32, depth=1, num_heads=2)
    try:
        from cmae_course.cmae import CMAE
    except ImportError:                 # before the CMAE module exists, check the same machinery on MAE
        from cmae_course.mae import MAE
        return MAE(enc, dec)
    return CMAE(enc, dec, **cmae_test_kwargs())


def cmae_test_kwargs():
    return dict(use_loc=False)


def make_items():
    "N_ITEMS deterministic (x1, x2, idx) triples from the embedded dataset: full images and their mirror images."
    from cmae_course.readers import load_split
    from cmae_course.views import ViewDataset
    ims = load_split(None, 'train', 64).subset(list(range(N_ITEMS)))
    x = ViewDataset(ims, 'eval', 32).get_batch(list(range(N_ITEMS)))[0]
    return [(x[i], x[i].flip(-1), i) for i in range(N_ITEMS)]


def noise_for(idx, L):
    "Per-item masking noise, a function of the item index only (so both runs mask each image identically)."
    return torch.stack([torch.rand(L, generator=torch.Generator().manual_seed(1000 + int(i))) for i in idx])


def learner(items, bs):
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.callback.core import Callback
    from cmae_course.train import ssl_learner, unwrap

    class FixedNoise(Callback):
        order = -20
        def before_batch(self):
            m = unwrap(self.learn.model)
            L = m.model.encoder.num_patches
            m.forward_kwargs = dict(noise=noise_for(self.yb[0], L))
            if hasattr(m.model, 'momentum_update'): m.forward_kwargs['noise_k'] = noise_for(self.yb[0] + 5000, L)

    dls = DataLoaders(DataLoader(items, bs=bs, shuffle=False, drop_last=True), DataLoader(items[:bs], bs=bs), device='cpu')
    return ssl_learner(make_model(), dls, lr=LR, device='cpu', precision='fp32', cbs=[FixedNoise()])


def worker(out):
    "One DDP rank: train 1 epoch, record the all-reduced first-step loss and the weights after step 1."
    import torch.distributed as dist
    from fastai.callback.core import Callback, CancelFitException
    from cmae_course.train import unwrap
    from cmae_course.devices import init_distributed
    rank, ws = init_distributed(torch.device('cpu'))
    assert ws == WORLD, ws
    items = make_items()
    rec = {}

    class Record(Callback):
        order = 100
        def after_loss(self):
            if self.train_iter == 0:
                parts = {k: v.detach().clone() for k, v in self.pred.items() if torch.is_tensor(v) and v.ndim == 0}
                for v in parts.values(): dist.all_reduce(v); v /= ws
                rec['first'] = {k: float(v) for k, v in parts.items()}
                rec['n_local'] = len(self.yb[0]); rec['items'] = self.yb[0].tolist()
        def after_step(self):
            if self.learn.opt_steps == 1:
                rec['w1'] = torch.cat([p.detach().flatten() for p in unwrap(self.learn.model).parameters()])
                rec['n_iter'] = len(self.dl)

    learn = learner(items, BS)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=LR, cbs=[Record()])
    gathered = [None] * ws
    dist.all_gather_object(gathered, rec['items'])
    rec['all_items'] = gathered
    rec['opt_steps'] = learn.opt_steps
    rec['epoch'] = {n: v for n, v in zip(learn.recorder.metric_names[1:], learn.recorder.log[1:]) if isinstance(v, float)}
    if rank == 0: torch.save(rec, out)
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_first_step_matches_single_process(tmp_path):
    out = tmp_path/'ddp.pt'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(WORLD), __file__, str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, '\n'.join(l for l in r.stderr.splitlines() if 'rank' in l and 'Warn' not in l)[-3000:]
    rec = torch.load(out, weights_only=True)
    # interleaved shards: the first global batch is items 0..7, split 0,2,4,6 / 1,3,5,7
    assert sorted(sum(rec['all_items'], [])) == list(range(BS * WORLD))
    assert rec['n_local'] == BS and rec['n_iter'] == N_ITEMS // (BS * WORLD)
    assert rec['opt_steps'] == N_ITEMS // (BS * WORLD)

    # single process, global batch = both ranks' items
    from cmae_course.train import unwrap
    items = make_items()
    learn = learner(items, BS * WORLD)
    first = {}
    from fastai.callback.core import Callback
    class Rec(Callback):
        order = 100
        def after_loss(self):
            if self.train_iter == 0:
                first.update({k: float(v.detach()) for k, v in self.pred.items() if torch.is_tensor(v) and v.ndim == 0})
        def after_step(self):
            if self.learn.opt_steps == 1:
                first['w1'] = torch.cat([p.detach().flatten() for p in unwrap(self.learn.model).parameters()])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=LR, cbs=[Rec()])
    for k, v in rec['first'].items():
        assert abs(v - first[k]) < 1e-4 * max(1., abs(v)), (k, v, first[k])
    assert 'loss' in rec['first'] and len(rec['first']) >= 2
    # after one AdamW step (update ~ lr * g/|g|): equal except where |g| ~ eps makes the direction float noise
    diff = (rec['w1'] - first['w1']).abs()
    assert diff.max() < LR and (diff > 1e-6).float().mean() < 1e-3, (diff.max(), (diff > 1e-6).float().mean())
    # the epoch's logged loss parts (what metrics.json gets) are averages over BOTH ranks' batches, as in one process
    single = {n: v for n, v in zip(learn.recorder.metric_names[1:], learn.recorder.log[1:]) if isinstance(v, float)}
    for k in ('rec', 'ctr', 'ctr_acc'):
        assert abs(rec['epoch'][k] - single[k]) < 2e-3 * max(1., abs(single[k])), (k, rec['epoch'][k], single[k])


if __name__ == '__main__':
    worker(sys.argv[1])
