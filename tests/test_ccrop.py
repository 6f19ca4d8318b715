"ContrastiveCrop pieces that notebooks are bad at: 2-process box gathering and box refresh (gloo), and the refresh callback inside a real fastai fit."
import tempfile
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from types import SimpleNamespace
from cmae_course.ccrop import whole_image_boxes, dataset_boxes
from cmae_course.box_refresh import gather_boxes, shard_indices, BoxRefreshCallback
from cmae_course.vit import ViT


def _fake_boxes(idxs):
    "A distinct, recognisable box per item index."
    i = idxs.float()
    return torch.stack([i / 100, i / 100 + .1, i / 100 + .2, i / 100 + .3], -1)


def _gather_worker(rank, world, init_file, n, out_file):
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    try:
        res = {}
        for mode in ('strided', 'contiguous'):
            idxs = shard_indices(n, mode=mode)                   # rank and world size from the process group
            res[mode] = (idxs.tolist(), gather_boxes(_fake_boxes(idxs), idxs, n).tolist())
        # unequal shards, explicit: rank 0 does items 0..1, rank 1 does the rest
        idxs = torch.arange(0, 2) if rank == 0 else torch.arange(2, n)
        res['uneven'] = (idxs.tolist(), gather_boxes(_fake_boxes(idxs), idxs, n).tolist())
        # the callback's refresh under the process group: each rank does its shard, the gathered table equals one process's
        torch.manual_seed(0)
        ds, model = _Squares(9), _Model()
        cb = BoxRefreshCallback(warmup=1, interval=1, k=0.2, source='attention', eval_ds=ds, bs=1)
        cb.learn = SimpleNamespace(model=model, epoch=0, n_epoch=3, dls=SimpleNamespace(train=SimpleNamespace(dataset=ds)))
        cb.before_fit()
        seen = []
        hook = model.encoder.patch_embed.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
        table = cb.refresh()
        hook.remove()
        ref = dataset_boxes(model.encoder, ds, sources=('attention',), ks=(0.2,), bs=1)[('attention', 0.2)]
        res['callback'] = (table.tolist(), ref.tolist(), ds.boxes.t.tolist(), ds.boxes.use_box, cb.learn.ccrop_log, sum(seen))
        # the position-free map needs statistics over the whole dataset: each rank sees its shard, the sums are all-reduced
        src = 'features:posfree:pre_norm'
        cb = BoxRefreshCallback(warmup=1, interval=1, k=0.5, source=src, eval_ds=ds, bs=2)
        cb.learn = SimpleNamespace(model=model, epoch=0, n_epoch=3, dls=SimpleNamespace(train=SimpleNamespace(dataset=ds)))
        cb.before_fit()
        res['posfree'] = cb.refresh().tolist()
        torch.save(res, f'{out_file}.{rank}')
    finally:
        dist.destroy_process_group()


def test_gather_boxes_two_ranks(tmp_path):
    n = 7
    init_file, out_file = tmp_path / 'init', tmp_path / 'out'
    mp.spawn(_gather_worker, args=(2, str(init_file), n, str(out_file)), nprocs=2, join=True)
    expected = _fake_boxes(torch.arange(n))
    res = [torch.load(f'{out_file}.{r}') for r in range(2)]
    assert res[0]['strided'][0] == [0, 2, 4, 6] and res[1]['strided'][0] == [1, 3, 5]
    assert res[0]['contiguous'][0] == [0, 1, 2, 3] and res[1]['contiguous'][0] == [4, 5, 6]
    for r in range(2):
        for mode in ('strided', 'contiguous', 'uneven'):
            torch.testing.assert_close(torch.tensor(res[r][mode][1]), expected)
        table, ref, written, use_box, log, n_seen = res[r]['callback']
        assert n_seen == [5, 4][r]                                 # each rank encoded only its strided shard of 9 items
        assert torch.tensor(table).shape == (9, 4) and table == ref == written and use_box
        assert log[0]['epoch'] == 0 and log[0]['n_true'] == 8
    assert res[0]['callback'][0] == res[1]['callback'][0]
    # the same boxes as one process over all 9 items: the statistics were all-reduced, not taken per shard
    torch.manual_seed(0)
    ds, model = _Squares(9), _Model()
    one = dataset_boxes(model.encoder, ds, sources=('features:posfree:pre_norm',), ks=(0.5,), bs=9)[('features:posfree:pre_norm', 0.5)]
    for r in range(2): torch.testing.assert_close(torch.tensor(res[r]['posfree']), one)


# ---- callback in a real fastai fit, with a minimal dataset that follows the data.py contract
class _BoxTable:
    def __init__(self, n): self.t, self.use_box, self.writes = whole_image_boxes(n), False, 0
    def set_all(self, t): self.t.copy_(t); self.writes += 1
    def update(self, idxs, new): self.t[idxs] = new


class _Squares(torch.utils.data.Dataset):
    "Bright squares on a dark background; true box known (NaN for item 0)."
    def __init__(self, n=12, size=32):
        g = torch.Generator().manual_seed(0)
        self.x, self.true_boxes = torch.randn(n, 3, size, size, generator=g) * .1, torch.zeros(n, 4)
        for i in range(n):
            x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            self.x[i, :, y0:y0 + size // 2, x0:x0 + size // 2] += 2.
            self.true_boxes[i] = torch.tensor([x0, y0, x0 + size // 2, y0 + size // 2]) / size
        self.true_boxes[0] = float('nan')
        self.boxes = _BoxTable(n)
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i], 0


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = ViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, drop_path=0.1)
    def forward(self, x): return self.encoder(x)[:, 0].pow(2).mean(-1)


def test_callback_in_fit():
    from fastai.learner import Learner
    from fastai.data.core import DataLoaders
    from fastai.callback.core import Callback
    torch.manual_seed(0)

    class Spy(Callback):
        "Records the model's mode at every training batch, and the table state after each epoch."
        def before_fit(self): self.train_modes, self.writes = [], []
        def before_batch(self):
            if self.learn.training: self.train_modes.append(self.learn.model.training)
        def after_epoch(self): self.writes.append(self.learn.dls.train.dataset.boxes.writes)

    train, valid = _Squares(12), _Squares(4)
    dls = DataLoaders.from_dsets(train, valid, bs=4, device='cpu')
    cb, spy = BoxRefreshCallback(warmup=2, interval=2, k=0.1, source='features', eval_ds=train, bs=5), Spy()
    spy.order = 45
    learn = Learner(dls, _Model(), loss_func=lambda out, *_: out.mean(), cbs=[cb, spy])
    learn.fit(5, 1e-3)
    assert [r['epoch'] for r in learn.ccrop_log] == [1, 3]          # E = 2, 4; not after the last epoch 5
    assert spy.writes == [0, 1, 1, 2, 2] and train.boxes.use_box
    assert all(spy.train_modes) and len(spy.train_modes) == 15        # every training batch ran in train mode
    rec = learn.ccrop_log[-1]
    assert rec['n_true'] == 11 and rec['source'] == 'features' and 0 <= rec['miou'] <= 1
    torch.testing.assert_close(torch.tensor(rec['miou_whole']), torch.tensor(0.25))
    assert ((train.boxes.t[:, 2:] > train.boxes.t[:, :2]).all())

    # refresh called directly keeps the current mode, including a submodule frozen in eval mode
    learn.model.train(); learn.model.encoder.blocks[0].drop_path.eval()
    cb.refresh()
    assert learn.model.training and not learn.model.encoder.blocks[0].drop_path.training
