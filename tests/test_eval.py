"Evaluation protocols and the `cmae_eval` command: kNN by hand, linear probe, layer decay, CLI JSON, bad input."
import json, math, subprocess, sys
from pathlib import Path
import pytest
import torch

from cmae_course.probes import knn_scores, knn_eval, linear_probe
from cmae_course.finetune import param_groups_lrd, Classifier
from cmae_course.evaluate import load_encoder, run_eval
from cmae_course.vit import ViT

BIN = Path(sys.executable).parent


def tiny_vit(**kw): return ViT(**{**dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2), **kw})


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    from cmae_course.data import make_default_dataset
    return make_default_dataset(root=tmp_path_factory.mktemp('data'), n_classes=3, n_train=6, n_val=3, size=32)


@pytest.fixture(scope='module')
def ckpt_dir(tmp_path_factory):
    "A run folder holding a checkpoint in cmae_pretrain's format (checkpoint.learner_state keys)."
    d = tmp_path_factory.mktemp('run')
    torch.manual_seed(0)
    enc = tiny_vit()
    sd = {'model.encoder.' + k: v for k, v in enc.state_dict().items()}
    sd['model.decoder.pred.weight'] = torch.zeros(4, 4)
    torch.save(dict(format='cmae_course-ckpt-1', epoch=1, model=sd, config=dict(method='mae', num_heads=2, img_size=32)),
               d / 'ckpt_e0001.pt')
    return d


def cli(*args):
    return subprocess.run([str(BIN / 'cmae_eval'), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_knn_equals_hand_computation():
    bank = torch.tensor([[1., 0.], [0., 1.], [-1., 0.], [0.6, 0.8], [0., -1.]])
    y = torch.tensor([0, 1, 1, 0, 2])
    q = torch.tensor([[2., 2.], [0., -3.]])
    r2 = 1 / math.sqrt(2)
    # query 0 (45 deg): sims [r2, r2, -r2, 1.4*r2, -r2]; k=3 -> items 3, 0 (class 0) and 1 (class 1)
    # query 1 (down): sims [0, -1, 0, -0.8, 1]; k=3 -> item 4 (class 2, s=1), items 0 (class 0) and 2 (class 1) with s=0
    e = lambda s: math.exp(s / 0.07)
    votes = torch.tensor([[e(1.4 * r2) + e(r2), e(r2), 0.], [e(0.), e(0.), e(1.)]])
    hand = votes / votes.sum(1, keepdim=True)                        # scores = each class's share of the votes
    got = knn_scores(bank, y, q, k=3, T=0.07, n_classes=3, chunk=1)
    assert torch.allclose(got, hand, rtol=1e-4, atol=1e-7)
    assert torch.allclose(knn_scores(bank, y, q, k=3, T=1e-4, n_classes=3).argmax(1), torch.tensor([0, 2]))  # tiny T: no overflow
    assert knn_eval(bank, y, q, torch.tensor([0, 2]), k=3) == dict(top1=100., top5=100.)


def test_linear_probe_separable():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 3
    ytr, yva = torch.arange(5).repeat(60), torch.arange(5).repeat(20)
    xtr = centers[ytr] + torch.randn(300, 16, generator=g); xva = centers[yva] + torch.randn(100, 16, generator=g)
    for opt in ('lars', 'sgd', 'adamw'):
        r = linear_probe(xtr, ytr, xva, yva, epochs=30, bs=64, opt=opt, blr=6.4 if opt == 'lars' else None)
        assert r['top1'] >= 95, (opt, r['top1'])
    bad = linear_probe(xtr, torch.randint(0, 5, (300,), generator=g), xva, yva, epochs=30, bs=64, opt='sgd')
    assert bad['top1'] < 60                                          # random labels: nothing to learn


def test_layer_decay_groups():
    clf = Classifier(tiny_vit(depth=3), n_classes=4)
    groups = {n: g for g in param_groups_lrd(clf, weight_decay=0.05, layer_decay=0.65) for n in g['names']}
    nl = 4                                                           # depth + 1
    assert groups['encoder.cls_token']['lr_scale'] == pytest.approx(0.65 ** nl)
    assert groups['encoder.patch_embed.proj.weight']['lr_scale'] == pytest.approx(0.65 ** nl)
    for k in range(3): assert groups[f'encoder.blocks.{k}.attn.qkv.weight']['lr_scale'] == pytest.approx(0.65 ** (nl - k - 1))
    assert groups['head.weight']['lr_scale'] == 1 and groups['fc_norm.weight']['lr_scale'] == 1
    assert groups['head.weight']['weight_decay'] == 0.05 and groups['head.bias']['weight_decay'] == 0
    assert groups['encoder.cls_token']['weight_decay'] == 0 and groups['encoder.blocks.0.norm1.weight']['weight_decay'] == 0
    assert 'encoder.pos_embed' not in groups                          # fixed sin-cos: requires_grad=False
    assert sum(len(g['params']) for g in param_groups_lrd(clf)) == sum(p.requires_grad for p in clf.parameters())


def test_cli_knn_json(tiny_data, ckpt_dir):
    r = cli('--checkpoint', ckpt_dir, '--data', tiny_data, '--protocol', 'knn', '--seed', 1)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)                                       # exactly one JSON object on stdout
    assert {'protocol', 'top1', 'top5', 'k', 'T', 'data', 'checkpoint', 'readout', 'n_train', 'n_val', 'seconds'} <= set(out)
    assert (out['protocol'], out['k'], out['n_train'], out['n_val'], out['readout']) == ('knn', 20, 18, 9, 'mean')
    assert out['checkpoint'].endswith('ckpt_e0001.pt') and 0 <= out['top1'] <= out['top5'] <= 100


def test_run_eval_linear_and_finetune(tiny_data, ckpt_dir):
    lin = run_eval(ckpt_dir, tiny_data, 'linear', readout='cls')                 # the converged L-BFGS probe
    assert (lin['protocol'], lin['opt'], lin['readout']) == ('linear', 'lbfgs', 'cls') and 'epochs' not in lin
    assert lin['train_loss'] >= 0 and 0 <= lin['train_acc'] <= 100 and lin['wd'] > 0
    sched = run_eval(ckpt_dir, tiny_data, 'linear', epochs=3, opt='lars')       # a scheduled probe states its schedule
    assert (sched['opt'], sched['epochs'], sched['bs']) == ('lars', 3, 18)
    ft = run_eval(ckpt_dir / 'ckpt_e0001.pt', tiny_data, 'finetune', epochs=1, bs=6)
    assert (ft['protocol'], ft['epochs'], ft['readout']) == ('finetune', 1, 'mean')
    json.dumps(lin); json.dumps(sched); json.dumps(ft)


@pytest.mark.parametrize('make,msg', [
    (lambda d: d / 'missing.pt', 'does not exist'),
    (lambda d: (d / 'garbage.pt').write_bytes(b'\x00' * 100) and d / 'garbage.pt', 'not a torch checkpoint'),
    (lambda d: torch.save(dict(model=dict(w=torch.zeros(2))), d / 'nomodel.pt') or d / 'nomodel.pt', 'found no encoder weights'),
    (lambda d: d, 'no ckpt_eNNNN.pt'),                               # an empty folder
])
def test_bad_checkpoint(tmp_path, tiny_data, make, msg):
    path = make(tmp_path)
    with pytest.raises((FileNotFoundError, ValueError), match=msg): load_encoder(path)
    if msg == 'not a torch checkpoint':                               # the CLI: one line on stderr, exit 2, nothing on stdout
        r = cli('--checkpoint', path, '--data', tiny_data)
        assert r.returncode == 2 and r.stdout == '' and len(r.stderr.strip().splitlines()) == 1 and msg in r.stderr


def test_cli_bad_data(ckpt_dir, tmp_path):
    r = cli('--checkpoint', ckpt_dir, '--data', tmp_path / 'nope')
    assert r.returncode == 2 and 'does not exist' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_moco_checkpoint(tmp_path):
    from cmae_course.moco import create_moco
    moco = create_moco('v2', layers=(1, 1, 1, 1), K=32).eval()
    torch.save(dict(format='cmae_course-ckpt-1', model={'model.' + k: v for k, v in moco.state_dict().items()}, config={}),
               tmp_path / 'ckpt_e0003.pt')
    enc, cfg = load_encoder(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    assert cfg['encoder_type'] == 'resnet' and torch.allclose(enc(x), moco.encoder(x), atol=1e-5)


def test_official_mae_layout(tmp_path):
    "An official MAE file: {'model': encoder keys without prefix + decoder_* / mask_token}; heads = width // 64."
    torch.manual_seed(0)
    enc = ViT(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2)
    sd = dict(enc.state_dict(), mask_token=torch.zeros(1, 1, 128), **{'decoder_pred.weight': torch.zeros(192, 64)})
    torch.save(dict(model=sd), tmp_path / 'mae_pretrain_vit_tiny.pth')
    got, cfg = load_encoder(tmp_path / 'mae_pretrain_vit_tiny.pth')
    x = torch.randn(2, 3, 32, 32)
    enc.eval()
    assert got.num_heads == 2 and got.patch_embed.img_size == (32, 32) and torch.allclose(got(x), enc(x), atol=1e-5)
