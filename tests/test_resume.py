"""SIGKILL a tiny `cmae_pretrain` run in the middle of an epoch, rerun it with --resume: it finishes with the same
number of optimiser steps as an uninterrupted run, and the checkpoint it resumed from loads (weights_only)."""
import json, os, re, signal, subprocess, sys, shutil, time
from pathlib import Path

import torch

EXE = shutil.which('cmae_pretrain') or str(Path(sys.executable).parent/'cmae_pretrain')
ENV = {**os.environ, 'OMP_NUM_THREADS': '2', 'PYTHONWARNINGS': 'ignore'}
EPOCHS, N, BS = 3, 192, 8
ARGS = ['--epochs', str(EPOCHS), '--n-train', str(N), '--bs', str(BS), '--img-size', '32', '--patch-size', '8',
        '--depth', '1', '--dec-dim', '32', '--dec-depth', '1', '--dec-heads', '2', '--device', 'cpu', '--precision', 'fp32',
        '--keep', '5', '--no-probe', '--no-figures']


def test_sigkill_then_resume(tmp_path):
    out = tmp_path/'run'
    p = subprocess.Popen([EXE, *ARGS, '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    t0 = time.time()
    try:
        while not (out/'ckpt_e0001.pt').exists():           # wait for the first epoch's checkpoint ...
            assert p.poll() is None, 'run ended before writing a checkpoint'
            assert time.time() - t0 < 240, 'no checkpoint after 240 s'
            time.sleep(0.01)
        # ... then kill at once: the run is now in epoch 2 (24 iterations), whatever the machine's speed
        assert p.poll() is None, 'run finished before it could be killed'
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert p.returncode == -signal.SIGKILL
    left = sorted(q.name for q in out.glob('ckpt_e*.pt'))
    assert 'ckpt_e0003.pt' not in left, left
    r = subprocess.run([EXE, *ARGS, '--out', str(out), '--resume'], capture_output=True, text=True, timeout=240, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r'resumed from (\S+) \(epoch (\d+)', r.stdout)
    assert m, r.stdout[-2000:]
    from cmae_course.checkpoint import load_checkpoint
    ck = load_checkpoint(m[1])                               # the checkpoint we resumed from is intact
    assert ck['epoch'] == int(m[2]) >= 1 and ck['opt_steps'] == ck['epoch'] * (N // BS)
    s = json.loads((out/'summary.json').read_text())
    assert s['opt_steps'] == EPOCHS * (N // BS)              # same final step count as an uninterrupted run
    hist = json.loads((out/'metrics.json').read_text())
    assert [h['epoch'] for h in hist] == list(range(1, EPOCHS + 1))
    assert not list(out.glob('.*.tmp'))                      # no temp files left behind by the atomic writes


def test_checkpoint_keeps_contrastivecrop_boxes():
    "learner_state / restore_learner carry ContrastiveCrop's box table and its on/off switch."
    from cmae_course.data import make_default_dataset
    from cmae_course.views import cmae_dataloaders
    from cmae_course.cmae import create_cmae
    from cmae_course.train import ssl_learner
    from cmae_course.checkpoint import learner_state, restore_learner
    torch.manual_seed(0)
    dls = cmae_dataloaders(make_default_dataset(n_train=20, n_val=5, n_test=2), img_size=32, bs=8, device='cpu')
    model = create_cmae(dict(embed_dim=32, depth=1, num_heads=2), img_size=32, patch_size=8, dec_dim=32, dec_depth=1,
                        dec_heads=2, proj_hidden=32, proj_dim=16)
    learn = ssl_learner(model, dls, device='cpu', precision='fp32')
    boxes = dls.train.dataset.boxes
    lo = torch.rand(len(boxes), 2) * 0.5
    saved = torch.cat([lo, lo + 0.4], 1)
    boxes.set_all(saved); boxes.use_box = True
    st = learner_state(learn, 0)
    boxes.set_all(torch.tensor([[0., 0., 1., 1.]]).repeat(len(boxes), 1)); boxes.use_box = False
    restore_learner(learn, st)
    assert torch.equal(boxes.t, saved) and boxes.use_box
