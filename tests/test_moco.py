"""MoCo baselines (cmae_course.moco): what the notebook cannot show.

- two CPU processes (gloo, launched with torch.distributed.run on this same file): shuffle-BN across ranks is a permutation
  that unshuffles exactly, the enqueue is gathered (both ranks hold the same queue = both ranks' keys in rank order), unequal
  batch sizes fail with a clear error, and a DDP-wrapped MoCo takes an optimiser step;
- checkpoints: queue and pointer survive torch.save / torch.load(weights_only=True); the evaluation module rebuilds the encoder;
- a few SGD steps on a handful of images make the loss fall; the fastai trainer drives MoCo with the after-step momentum callback."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

WORLD, N_LOCAL = 2, 4


class TinyEncoder(nn.Module):
    "BN-free: its keys do not depend on which images share a batch, so the shuffled keys must equal the plain ones."
    num_features = 16
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
    def forward(self, x): return F.relu(self.conv(x)).mean((2, 3))


def worker(out_path):
    import torch.distributed as dist
    from cmae_course.moco import MoCo, batch_shuffle_ddp, batch_unshuffle_ddp, concat_all_gather
    dist.init_process_group('gloo')
    rank, ws = dist.get_rank(), dist.get_world_size()
    rec = {}
    # 1. shuffle / unshuffle across ranks
    torch.manual_seed(100 + rank)                         # different local data; the permutation comes from rank 0
    x = torch.arange(N_LOCAL * 3, dtype=torch.float32).view(N_LOCAL, 3) + 1000 * rank
    xs, idx_un = batch_shuffle_ddp(x)
    rec['roundtrip'] = torch.equal(batch_unshuffle_ddp(xs, idx_un), x)
    rec['shuffled_rows'] = xs[:, 0].tolist()
    # 2. MoCo forward under DDP: gathered enqueue, identical queues
    torch.manual_seed(0)
    model = MoCo(TinyEncoder(), dim=8, K=12, T=0.2, mlp=True)
    x1, x2 = torch.randn(N_LOCAL, 3, 8, 8) + rank, torch.randn(N_LOCAL, 3, 8, 8) - rank
    model.train()(x1, x2)
    with torch.no_grad(): k = F.normalize(model.head_k(model.encoder_k(x2)), dim=1)
    all_k = concat_all_gather(k)
    rec['queue_ok'] = torch.allclose(model.queue[:, :ws * N_LOCAL], all_k.T, atol=1e-6)
    rec['ptr'] = int(model.queue_ptr)
    q_all = [None] * ws
    dist.all_gather_object(q_all, model.queue.tolist())
    rec['queues_equal'] = all(q == q_all[0] for q in q_all)
    # 3. a DDP-wrapped MoCo trains; the key branch has no gradient and follows by EMA
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.1)
    out = ddp(x1, x2)
    opt.zero_grad(); out['loss'].backward(); opt.step()
    rec['key_no_grad'] = all(p.grad is None for p in model.key_params())
    w = [None] * ws
    dist.all_gather_object(w, torch.cat([p.detach().flatten() for p in model.query_params()]).tolist())
    rec['weights_equal'] = w[0] == w[1]
    # 4. unequal local batches: a clear error on every rank
    try:
        concat_all_gather(torch.zeros(N_LOCAL + rank, 2)); rec['unequal'] = 'no error'
    except ValueError as e: rec['unequal'] = str(e)
    recs = [None] * ws
    dist.all_gather_object(recs, rec)
    if rank == 0: Path(out_path).write_text(json.dumps(recs))
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_shuffle_and_gathered_queue(tmp_path):
    out = tmp_path / 'moco_ddp.json'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(WORLD), __file__, str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = json.loads(out.read_text())
    for rec in recs:
        assert rec['roundtrip'] and rec['queue_ok'] and rec['queues_equal'] and rec['key_no_grad'] and rec['weights_equal'], rec
        assert rec['ptr'] == WORLD * N_LOCAL
        assert 'same batch size' in rec['unequal'], rec['unequal']
    rows = sorted(recs[0]['shuffled_rows'] + recs[1]['shuffled_rows'])
    assert rows == sorted([3. * i + 1000 * r for r in range(WORLD) for i in range(N_LOCAL)])      # a permutation of all rows
    assert any(v >= 1000 for v in recs[0]['shuffled_rows']) or any(v < 1000 for v in recs[1]['shuffled_rows']), \
        "no row crossed ranks (possible but unlikely with this seed)"


def tiny_moco(**kw):
    from cmae_course.moco import create_moco
    torch.manual_seed(0)
    return create_moco(kw.pop('version', 'v2'), 'resnet18', layers=(1, 1, 1, 1), bn_group_size=4, **kw)


def test_checkpoint_roundtrip_and_eval_encoder(tmp_path):
    torch.set_num_threads(1)
    m = tiny_moco(K=20)
    for _ in range(3): m(torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8))   # ptr 24 % 20 = 4 (wrapped)
    assert int(m.queue_ptr) == 4
    torch.save(m.state_dict(), tmp_path / 'moco.pt')
    sd = torch.load(tmp_path / 'moco.pt', weights_only=True)
    fresh = tiny_moco(K=20)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.queue, m.queue) and int(fresh.queue_ptr) == 4
    x = torch.randn(2, 3, 16, 16)
    from cmae_course.evaluate import resnet_from_state_dict   # the evaluation module's loader: plain BN, same keys
    enc = resnet_from_state_dict(sd).eval()
    with torch.no_grad(): assert torch.allclose(enc(x), m.encoder.eval()(x), atol=1e-6)


def test_bad_inputs():
    from cmae_course.moco import create_moco, resnet_small_stem, MoCo, moco_transforms, enqueue_
    with pytest.raises(ValueError, match="version must be"): create_moco('v3')
    with pytest.raises(ValueError, match="arch must be one of"): resnet_small_stem('resnet7')
    with pytest.raises(ValueError, match="feat_dim is required"): MoCo(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="K \\(queue size\\)"): MoCo(resnet_small_stem(layers=(1, 1, 1, 1)), K=0)
    with pytest.raises(ValueError, match="keys must have shape"): enqueue_(torch.zeros(4, 6), torch.zeros((), dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="version must be"): moco_transforms('v9')


def test_transforms_on_pil():
    from PIL import Image
    from cmae_course.moco import moco_transforms, TwoCropsTransform
    torch.manual_seed(0)
    img = Image.fromarray((torch.rand(80, 72, 3) * 255).to(torch.uint8).numpy())
    for v in ('v1', 'mocov2'):
        a, b = TwoCropsTransform(moco_transforms(v, 64))(img)
        assert a.shape == b.shape == (3, 64, 64) and a.dtype == torch.float32 and not torch.equal(a, b)


def test_loss_falls_in_a_few_steps():
    "16 smooth random images, 2 batches of 8 in turn, K = 8: after the queue fills the loss must drop clearly."
    torch.set_num_threads(1)
    m = tiny_moco(K=8, m=0.99)
    imgs = F.interpolate(torch.randn(16, 3, 3, 3), size=14, mode='bilinear')
    def views(x):
        i, j = torch.randint(0, 3, (2,))
        v = x[:, :, i:i + 12, j:j + 12]
        return torch.where((torch.rand(len(x)) < 0.5)[:, None, None, None], v.flip(-1), v) * (1 + 0.1 * torch.randn(len(x), 3, 1, 1))
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    losses = []
    for step in range(24):
        b = imgs[(step % 2) * 8:(step % 2) * 8 + 8]
        out = m(views(b), views(b))
        opt.zero_grad(); out['loss'].backward(); opt.step(); losses.append(out['loss'].item())
    early, late = sum(losses[1:6]) / 5, sum(losses[-5:]) / 5
    assert late < early - 0.3, (early, late, losses)


def test_fastai_trainer_drives_moco():
    "The course trainer (SSLModel hands MoCo no mask ratio; MomentumUpdate calls momentum_update after each step) runs MoCo."
    train = pytest.importorskip('cmae_course.train')
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    torch.set_num_threads(1)
    torch.manual_seed(0)
    items = [(torch.randn(3, 8, 8), torch.randn(3, 8, 8), i) for i in range(16)]
    dls = DataLoaders(DataLoader(items, bs=8, shuffle=False, drop_last=True), DataLoader(items[:8], bs=8), device='cpu')
    m = tiny_moco(version='v1', K=16, momentum_in_forward=False)
    k0 = [p.clone() for p in m.key_params()]
    learn = train.ssl_learner(m, dls, lr=1e-3, device='cpu', precision='fp32', momentum=(0.999, 0.999))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=1e-3)
    assert learn.opt_steps == 2 and int(m.queue_ptr) == 0            # 2 batches of 8 filled the queue of 16
    assert any(not torch.equal(a, b) for a, b in zip(k0, m.key_params()))   # the callback moved the key branch
    m2 = tiny_moco(version='v1', K=16)                                # in-forward update + callback: refused, not doubled
    learn2 = train.ssl_learner(m2, dls, lr=1e-3, device='cpu', precision='fp32')
    with pytest.raises(RuntimeError, match='momentum_in_forward'):
        with learn2.no_bar(), learn2.no_logging(): learn2.fit(1, lr=1e-3)


if __name__ == '__main__':
    worker(sys.argv[1])
