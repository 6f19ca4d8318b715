"""What users do to the documented commands, end to end, each with a timeout so that a hang fails instead of stalling CI:
the README's multi-process command as written, a NaN on one rank, a damaged validation split, and a log written to a file."""
import json, os, re, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
SMALL = ['--epochs', '2', '--n-train', '64', '--bs', '8', '--no-floor']


def readme_torchrun():
    "The README's torchrun command, with `.venv/bin/` pointing at this test's environment."
    m = re.search(r'`(\.venv/bin/torchrun [^`]+)`', (ROOT/'README.md').read_text())
    assert m, 'the README shows no torchrun command'
    return [a.replace('.venv/bin/', str(BIN) + '/') for a in m.group(1).split()]


def run(cmd, cwd, timeout=600, env=None):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or ENV)


def test_readme_torchrun_command_finishes_like_one_process(tmp_path):
    cmd = readme_torchrun()
    r = run(cmd, tmp_path/'multi' if (tmp_path/'multi').mkdir() is None else None)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-3000:]
    single = [str(BIN/'cmae_pretrain')] + cmd[cmd.index(next(a for a in cmd if a.endswith('cmae_pretrain'))) + 1:]
    (tmp_path/'single').mkdir()
    r1 = run(single, tmp_path/'single')
    assert r1.returncode == 0, r1.stderr[-3000:]
    files = lambda d: sorted(p.name for p in (d/'runs'/'cmae').iterdir())
    assert files(tmp_path/'multi') == files(tmp_path/'single'), (files(tmp_path/'multi'), files(tmp_path/'single'))
    for f in ('summary.json', 'metrics.json', 'encoder.pt', 'reconstructions.png', 'heatmaps.png'):
        assert f in files(tmp_path/'multi'), f
    s = json.loads((tmp_path/'multi'/'runs'/'cmae'/'summary.json').read_text())
    assert s['world_size'] == 2 and 'linprobe_top1' in s
    assert r.stdout.count('linprobe_top1') == 1          # one process reports


def test_nan_on_one_rank_stops_every_rank_and_resume_completes(tmp_path):
    torchrun = readme_torchrun()
    launcher = torchrun[:torchrun.index(next(a for a in torchrun if a.endswith('cmae_pretrain'))) + 1]
    r = run(launcher + SMALL, tmp_path, env={**ENV, 'CMAE_INJECT_NAN': '1:6'})    # step 6: in epoch 2 (4 steps per epoch)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.startswith('cmae_pretrain: stopped:')]
    assert len(lines) == 2 and all('non-finite loss on rank 1' in l and 'optimizer step 6' in l for l in lines), r.stderr[-3000:]
    out = tmp_path/'runs'/'cmae'
    assert sorted(p.name for p in out.glob('ckpt_*.pt')) == ['ckpt_e0001.pt']          # epoch 1's checkpoint, intact
    r2 = run(launcher + SMALL + ['--resume'], tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert 'resumed from' in r2.stdout and json.loads((out/'summary.json').read_text())['opt_steps'] == 8


@pytest.mark.parametrize('line,msg', [
    ('../../../../etc/passwd\tdisk\t1\t2\t30\t40', 'resolves outside'),
    ('val_0.JPEG\tnot_a_class\t1\t2\t30\t40', 'not_a_class'),
    ('val_999.JPEG\tdisk\t1\t2\t30\t40', 'does not exist'),
])
def test_bad_validation_split_stops_before_training(tmp_path, line, msg):
    from cmae_course.data import make_default_dataset
    ds = make_default_dataset(tmp_path/'gen', n_classes=3, n_train=6, n_val=2)
    va = ds/'val'/'val_annotations.txt'
    va.write_text(va.read_text() + line + '\n')
    r = run([str(BIN/'cmae_pretrain'), '--data', str(ds), '--out', str(tmp_path/'o')] + SMALL, tmp_path)
    assert r.returncode != 0
    err = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith('cmae_pretrain: error:') and msg in err[0], r.stderr[-2000:]
    assert not list((tmp_path/'o').glob('ckpt_*.pt'))                                   # nothing trained


def test_image_folder_without_val_holds_out_and_says_so(tmp_path):
    from cmae_course.data import make_default_dataset
    ds = make_default_dataset(tmp_path/'gen', n_classes=3, n_train=10, n_val=1)
    folder = tmp_path/'if'
    for w in ('disk', 'square', 'triangle'): shutil.copytree(ds/'train'/w/'images', folder/w)
    r = run([str(BIN/'cmae_pretrain'), '--data', str(folder), '--out', str(tmp_path/'o'), '--epochs', '1', '--bs', '8', '--no-floor'],
            tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    said = [l for l in r.stdout.splitlines() if 'no validation split' in l]
    assert len(said) == 1 and '3 held-out training images' in said[0], r.stdout[-2000:]


def test_log_written_to_a_file_has_one_line_per_epoch(tmp_path):
    log = tmp_path/'log.txt'
    with open(log, 'w') as f:
        r = subprocess.run([str(BIN/'cmae_pretrain'), '--out', str(tmp_path/'o')] + SMALL, stdout=f, stderr=subprocess.STDOUT,
                           timeout=600, env=ENV, cwd=tmp_path)
    text = log.read_text()
    assert r.returncode == 0, text[-2000:]
    assert '\r' not in text and '█' not in text and '%|' not in text.replace(' ', '')      # no progress-bar frames
    rows = [l for l in text.splitlines() if re.match(r'\s+\d+\s+\d+\.\d+', l)]
    assert len(rows) == 2, text[:2000]                                                      # one line per epoch
    assert len(text) < 4000, len(text)


def test_posfree_boxes_under_torchrun(tmp_path):
    """The position-free heatmap needs statistics over the whole training set, all-reduced across ranks at every box refresh
    (their equality with one process's is tested in tests/test_ccrop.py); the end-of-run figure, which rank 0 draws alone, must
    not wait for the other rank. The README's torchrun with that heatmap finishes, refreshes its boxes and draws them; the
    timeout turns a hang into a failure."""
    torchrun = readme_torchrun()
    launcher = torchrun[:torchrun.index(next(a for a in torchrun if a.endswith('cmae_pretrain'))) + 1]
    args = SMALL + ['--ccrop-source', 'features:posfree:pre_norm', '--ccrop-warmup', '1', '--ccrop-interval', '1',
                    '--no-probe', '--out', 'run']
    r = run(launcher + args, tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-3000:]
    out = tmp_path/'run'
    assert (out/'heatmaps.png').is_file()
    hist = json.loads((out/'metrics.json').read_text())
    assert 0 <= hist[0]['box_iou'] <= 1
    from cmae_course.checkpoint import load_checkpoint
    boxes = load_checkpoint(out/'ckpt_e0002.pt')['boxes']
    assert boxes.shape == (64, 4) and (boxes != boxes.new_tensor([0., 0., 1., 1.])).any()     # refreshed, not all whole images
