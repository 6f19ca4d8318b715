"Evaluation wired into training: the kNN monitor in metrics.json, and cmae_eval's loader on a real cmae_pretrain run folder."
import json, subprocess, sys
from pathlib import Path
import torch

from cmae_course.finetune import KNNMonitorCallback
from cmae_course.evaluate import load_encoder

BIN = Path(sys.executable).parent


def test_knn_monitor_in_metrics_json(tmp_path):
    "The monitor's knn_top1 reaches metrics.json through the Recorder (train.ssl_learner + checkpoint.SaveCheckpoints)."
    from cmae_course.data import make_default_dataset
    from cmae_course.readers import load_split
    from cmae_course.views import mae_dataloaders, eval_view, ViewDataset
    from cmae_course.mae import create_mae
    from cmae_course.train import ssl_learner, fit_ssl
    from cmae_course.checkpoint import SaveCheckpoints
    from fastai.callback.core import Callback
    root = make_default_dataset(root=tmp_path / 'd', n_classes=3, n_train=8, n_val=2, size=32)
    tr, va = load_split(root, 'train', 32), load_split(root, 'val', 32)
    torch.manual_seed(0)
    mae = create_mae(dict(embed_dim=32, depth=1, num_heads=2), img_size=32, patch_size=8, dec_dim=32, dec_depth=1, dec_heads=2)
    dls = mae_dataloaders(images=(tr, va), img_size=32, bs=8, device='cpu')
    mon = KNNMonitorCallback(eval_view(dls.train.dataset), ViewDataset(va, 'eval', 32), every=2)
    modes = []
    class Modes(Callback):
        order = 46                                                    # right after the monitor (45)
        def after_train(self): modes.append(all(m.training for m in self.learn.model.modules()))
    learn = ssl_learner(mae, dls, device='cpu', precision='fp32', cbs=[mon, Modes(), SaveCheckpoints(tmp_path / 'run', config=dict(num_heads=2))])
    with learn.no_bar(), learn.no_logging(): fit_ssl(learn, 3, lr=1e-3)
    hist = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert [h.get('knn_top1') is not None for h in hist] == [False, True, True]   # every 2 epochs + the last one
    assert [r['epoch'] for r in learn.knn_log] == [1, 2] and learn.extra_metrics['knn_top1'] == learn.knn_log[-1]['knn_top1']
    assert modes == [True, True, True]                                # train mode restored after the kNN passes
    enc, _ = load_encoder(tmp_path / 'run')                            # and cmae_eval reads the run folder
    x = ViewDataset(va, 'eval', 32).get_batch([0, 1])[0]
    mae.encoder.eval()
    assert torch.allclose(enc(x), mae.encoder(x), atol=1e-5)


def test_cmae_pretrain_run_folder(tmp_path):
    "End to end: a real `cmae_pretrain --method cmae` run folder; the ONLINE encoder is loaded (not the momentum copy)."
    out = tmp_path / 'run'
    r = subprocess.run([str(BIN / 'cmae_pretrain'), '--method', 'cmae', '--epochs', '1', '--n_train', '32', '--bs', '16',
                        '--depth', '1', '--dec_depth', '1', '--dec_dim', '32', '--dec_heads', '2', '--out', str(out),
                        '--no-figures', '--no-probe'], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    enc, cfg = load_encoder(out)
    ck = torch.load(out / 'ckpt_e0001.pt', map_location='cpu', weights_only=True)['model']
    assert cfg['encoder_type'] == 'vit' and enc.num_heads == 3 and len(enc.blocks) == 1
    key = 'blocks.0.attn.qkv.weight'
    online = next(v for k, v in ck.items() if k.endswith('.encoder.' + key) or k == 'encoder.' + key)
    assert torch.equal(enc.state_dict()[key], online)
