"""`cmae_pretrain` end to end: one-line errors for bad arguments before any work, and a tiny CMAE run that writes
checkpoints, metrics.json, figures and a summary."""
import json, os, subprocess, sys, shutil
from pathlib import Path

import pytest
import torch

EXE = shutil.which('cmae_pretrain') or str(Path(sys.executable).parent/'cmae_pretrain')
ENV = {**os.environ, 'OMP_NUM_THREADS': '2', 'PYTHONWARNINGS': 'ignore'}
TINY = ['--epochs', '2', '--n-train', '64', '--bs', '16', '--img-size', '32', '--patch-size', '8', '--depth', '1',
        '--dec-dim', '32', '--dec-depth', '1', '--dec-heads', '2', '--device', 'cpu', '--precision', 'fp32',
        '--ccrop-warmup', '1', '--ccrop-interval', '1']


def run(*args, timeout=240):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_bad_argument_is_one_line_error_before_work(tmp_path):
    r = run('--decoder', 'lstm', '--out', str(tmp_path/'o'))
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('cmae_pretrain: error:') and '--decoder' in err[0], r.stderr[-2000:]
    assert not (tmp_path/'o').exists()                  # nothing was created: checks ran before any work


@pytest.mark.parametrize('kw,msg', [
    (dict(decoder='lstm'), '--decoder'),
    (dict(img_size=30, patch_size=8), 'not divisible'),
    (dict(data='/no/such/folder'), '--data'),
    (dict(out='/proc/cannot/write/here'), '--out'),
    (dict(method='simclr'), '--method'),
    (dict(ccrop_source='saliency'), '--ccrop-source'),
    (dict(color='both'), '--color'),
    (dict(loc_mode='jigsaw'), '--loc-mode'),
    (dict(precision='fp8'), '--precision'),
    (dict(init_mae='/no/such/ckpt.pth'), '--init-mae'),
])
def test_bad_arguments(kw, msg, tmp_path):
    from cmae_course.cli import cmae_pretrain
    kw.setdefault('out', str(tmp_path/'o'))
    with pytest.raises((ValueError, FileNotFoundError, PermissionError), match=msg.replace('-', r'\-')):
        cmae_pretrain(**kw)


def test_cli_argv_spellings():
    from cmae_course.config import dashed_argv
    cli_argv = lambda argv: dashed_argv(argv, switches=('ccrop',))   # cmae_pretrain's spellings
    assert cli_argv(['--img-size', '32', '--no-ccrop', '--lambda-ctr=0.5']) == ['--img_size', '32', '--ccrop', 'off', '--lambda_ctr=0.5']
    assert cli_argv(['--ccrop', '--bs', '8']) == ['--ccrop', 'on', '--bs', '8']
    assert cli_argv(['--ccrop', 'auto', '--no-probe']) == ['--ccrop', 'auto', '--no-probe']
    assert cli_argv(['--no_ccrop', '--ccrop', 'maybe']) == ['--ccrop', 'off', '--ccrop', 'maybe']   # the command rejects 'maybe'
    colour_argv = lambda argv: dashed_argv(argv, switches=('ccrop', 'color'))
    assert colour_argv(['--no-color', '--color', 'key', '--color']) == ['--color', 'off', '--color', 'key', '--color', 'on']
    assert dashed_argv(['--no-fewlabel', '--fewlabel', '--n-train', '3'], switches=('fewlabel',)) == [
        '--fewlabel', 'off', '--fewlabel', 'on', '--n_train', '3']


def test_location_in_the_shared_pass_trains_and_is_recorded(tmp_path):
    """`--loc-mode droppos` (the location task in the pass all three tasks share, the default before the own pass): a tiny run
    ends, scores the location task every epoch, and its checkpoint's config says which mode made it."""
    out = tmp_path/'run'
    r = run(*TINY, '--epochs', '1', '--no-probe', '--no-figures', '--loc-mode', 'droppos', '--out', str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    hist = json.loads((out/'metrics.json').read_text())
    assert isinstance(hist[-1]['loc'], float) and 0 <= hist[-1]['loc_acc'] <= 1, hist
    import torch
    ck = torch.load(out/'ckpt_e0001.pt', map_location='cpu', weights_only=False)
    assert ck['config']['loc_mode'] == 'droppos', ck['config']


def test_tiny_cmae_run_writes_outputs(tmp_path):
    out = tmp_path/'run'
    r = run(*TINY, '--out', str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    for f in ('ckpt_e0001.pt', 'ckpt_e0002.pt', 'metrics.json', 'summary.json', 'encoder.pt',
              'loss_curves.png', 'reconstructions.png', 'heatmaps.png'):
        assert f in names, (f, names)
    hist = json.loads((out/'metrics.json').read_text())
    assert [h['epoch'] for h in hist] == [1, 2]
    for k in ('rec', 'ctr', 'loc', 'lr', 'img_s'):
        assert all(isinstance(h[k], float) for h in hist), (k, hist)
    assert 'box_iou' in hist[0]                          # boxes refreshed after epoch 1 -> IoU with the true boxes
    s = json.loads((out/'summary.json').read_text())
    assert s['method'] == 'cmae' and s['opt_steps'] == 2 * (64 // 16) and 0 <= s['knn_top1'] <= 1
    assert 'knn_top1' in r.stdout                        # the summary table is printed
    from cmae_course.checkpoint import load_checkpoint
    ck = load_checkpoint(out/'ckpt_e0002.pt')            # weights_only load
    assert ck['epoch'] == 2 and ck['config']['method'] == 'cmae' and ck['boxes'].shape == (64, 4)
    assert any(k.startswith('m_encoder.') for k in ck['model'])   # the momentum encoder is saved


def test_auto_precision_is_measured_and_cached(tmp_path):
    """`--precision auto` on a CPU times the model in fp32 and bf16 before training, prints the figures it chose from, keeps the
    answer in the cache folder's precision.json, and reads it from there the second time."""
    from cmae_course.data import default_dataset
    # the dataset from the usual cache (generating 5,500 images again into the fresh one is 10 s that test nothing here)
    args = [a for a in TINY if a not in ('--precision', 'fp32')] + ['--epochs', '1', '--no-probe', '--no-figures',
                                                                     '--data', str(default_dataset())]
    env = {**ENV, 'XDG_CACHE_HOME': str(tmp_path/'cache')}
    go = lambda out: subprocess.run([EXE, *args, '--out', str(tmp_path/out)], capture_output=True, text=True, timeout=240, env=env)
    first, second = go('a'), go('b')
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    head1, head2 = first.stdout.splitlines()[0], second.stdout.splitlines()[0]
    assert '(auto: fp32 ' in head1 and ', bf16 ' in head1 and head1.endswith('measured)'), head1
    assert head2.endswith('cached)'), head2
    table = json.loads((tmp_path/'cache'/'cmae_course'/'precision.json').read_text())
    (rec,) = table.values()
    from cmae_course.devices import choose_precision
    s = json.loads((tmp_path/'a'/'summary.json').read_text())
    assert s['precision'] == rec['choice'] == choose_precision(rec['step_s']) and s['precision_step_s'] == rec['step_s']


def test_init_mae_loads_the_encoder_and_its_momentum_copy(tmp_path):
    "`--init-mae`: the official checkpoint's encoder weights reach the encoder and CMAE's momentum encoder."
    from cmae_course.config import resolve_config, build_model
    from cmae_course.interop import export_official_mae
    from cmae_course.mae import create_mae
    src = create_mae('vit_tiny', img_size=32, patch_size=4, depth=4, dec_dim=128, dec_depth=2, dec_heads=4)
    torch.save(export_official_mae(src), tmp_path/'mae.pth')
    for method in ('mae', 'cmae'):
        m = build_model(resolve_config(method=method, init_mae=str(tmp_path/'mae.pth'), out=str(tmp_path/method)))
        for k, v in src.encoder.state_dict().items():
            assert torch.equal(m.encoder.state_dict()[k], v), (method, k)
            if method == 'cmae': assert torch.equal(m.m_encoder.state_dict()[k], v), k
