"""Every pretraining method through the same command: `cmae_pretrain --method mae|cmae|mocov1|mocov2` trains, checkpoints
and logs the kNN monitor, and `cmae_eval` evaluates each method's checkpoint. Also `cmae_experiments`' bad input."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
TINY = ['--epochs', '2', '--n-train', '64', '--bs', '16', '--depth', '1', '--dec-depth', '1', '--dec-dim', '32',
        '--dec-heads', '2', '--knn-every', '1', '--no-figures', '--no-probe']


def run(*args, timeout=600):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope='module')
def small_data(tmp_path_factory):
    """A small labelled folder in the embedded dataset's layout (10 classes x 8 train + 4 val images): every method trains,
    monitors and is evaluated end to end without extracting 5,500 images' features with a ResNet-50 (about a minute on
    2 cores)."""
    from cmae_course.data import make_default_dataset
    return make_default_dataset(tmp_path_factory.mktemp('small'), n_train=8, n_val=4)


@pytest.fixture(scope='module')
def runs(tmp_path_factory, small_data):
    "One tiny run per method (trained once for all tests of this file)."
    root = tmp_path_factory.mktemp('methods')
    out = {}
    for m in ('mae', 'cmae', 'mocov1', 'mocov2'):
        r = run(BIN / 'cmae_pretrain', '--method', m, *TINY, '--data', small_data, '--out', root / m)
        assert r.returncode == 0, f'{m}: {r.stderr[-1500:]}'
        out[m] = root / m
    return out


@pytest.mark.parametrize('m', ['mae', 'cmae', 'mocov1', 'mocov2'])
def test_pretrain_writes_checkpoints_and_knn_monitor(runs, m):
    hist = json.loads((runs[m] / 'metrics.json').read_text())
    assert [h['epoch'] for h in hist] == [1, 2]
    assert all(0 <= h['knn_top1'] <= 1 and h['knn_top1'] <= h['knn_top5'] for h in hist), hist   # --knn-every 1: every epoch
    assert (runs[m] / 'ckpt_e0002.pt').exists() and (runs[m] / 'encoder.pt').exists()
    cfg = json.loads((runs[m] / 'summary.json').read_text())
    assert cfg['method'] == m and cfg['opt_steps'] == 2 * (64 // 16)


def test_moco_trains_with_sgd_and_a_queue(runs):
    import torch
    ck = torch.load(runs['mocov2'] / 'ckpt_e0002.pt', map_location='cpu', weights_only=True)
    assert ck['config']['opt'] == 'sgd' and ck['config']['arch'] == 'resnet50'
    assert ck['model']['queue'].shape == (128, 64)                        # queue = the 64 training images, whole batches
    assert ck['config']['momentum'] == 0.999


@pytest.mark.parametrize('m', ['mae', 'cmae', 'mocov1', 'mocov2'])
def test_cmae_eval_on_every_method(runs, m, small_data, tmp_path):
    r = run(BIN / 'cmae_eval', '--checkpoint', runs[m], '--protocol', 'knn', '--data', small_data, '--cache-dir', tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    res = json.loads(r.stdout)
    assert res['protocol'] == 'knn' and 0 <= res['top1'] <= 100 and res['checkpoint'].endswith('ckpt_e0002.pt')


def test_knn_monitor_off_by_default(tmp_path):
    i = TINY.index('--knn-every')
    r = run(BIN / 'cmae_pretrain', '--method', 'mae', *TINY[:i], *TINY[i + 2:], '--epochs', '1', '--out', tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    assert 'knn_top1' not in json.loads((tmp_path / 'metrics.json').read_text())[0]


@pytest.mark.parametrize('args,msg', [
    (['--method', 'mocov1', '--arch', 'vit_tiny'], '--arch vit_tiny: --method mocov1 trains a ResNet'),
    (['--method', 'mocov2', '--ccrop'], '--ccrop: this course'),
    (['--method', 'mocov1', '--resnet-layers', '1,2'], '--resnet-layers'),
    (['--knn-every', '-1'], '--knn-every -1'),
    (['--opt', 'adam'], "--opt 'adam'"),
    (['--decoder', 'hybrid_conv'], '--dec-depth 2: a hybrid_conv decoder needs at least 3 blocks'),
])
def test_bad_method_options_one_line(args, msg, tmp_path):
    r = run(BIN / 'cmae_pretrain', *args, '--out', tmp_path / 'x')
    assert r.returncode != 0 and msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / 'x' / 'metrics.json').exists()


def _experiments_in_process(*args, monkeypatch, capsys):
    """`cmae_experiments *args` through its console-script entry point, in this process (no 5 s import per call) ->
    (exit code, stdout, the error message); the SIGTERM handler it installs is put back."""
    import signal
    from cmae_course import experiments
    monkeypatch.setattr(sys, 'argv', ['cmae_experiments', *map(str, args)])
    handler = signal.getsignal(signal.SIGTERM)
    try:
        experiments.main(); code = 0
    except SystemExit as e: code = e.code
    finally: signal.signal(signal.SIGTERM, handler)
    out = capsys.readouterr().out
    return (0 if code is None else code if isinstance(code, int) else 1), out, code if isinstance(code, str) else ''


def test_experiments_bad_input(tmp_path, monkeypatch, capsys):
    r = run(BIN / 'cmae_experiments', '--rows', 'CMAE++', '--out', tmp_path)      # the installed script, as a user runs it
    assert r.returncode != 0 and "row 'CMAE++': unknown" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    ex = lambda *a: _experiments_in_process(*a, monkeypatch=monkeypatch, capsys=capsys)
    code, _, err = ex('--data', tmp_path / 'nope', '--out', tmp_path)
    assert code != 0 and 'no such folder' in err
    code, _, err = ex('--n-train', '0', '--rows', 'CMAE++', '--out', tmp_path)     # dashed option accepted
    assert code != 0 and "row 'CMAE++': unknown" in err
    code, _, err = ex('--fewlabel', 'maybe', '--out', tmp_path)
    assert code != 0 and "--fewlabel 'maybe': expected on, off or auto" in err
    code, out, _ = ex('--paper')
    assert code == 0 and out.count('cmae_pretrain --preset paper') == 4 and '--epochs 500 --bs 512' in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []                          # nothing written


def test_experiments_reuse_only_runs_of_the_same_command(tmp_path):
    """`cmae_experiments` reuses a finished run only if the same `cmae_pretrain` command made it (its command.txt): a folder
    finished by other options is refused in one line, before anything runs, and left as it was."""
    import shlex
    from cmae_course.experiments import run_experiments
    from cmae_course.table_rows import run_command
    folder = tmp_path / 'mae' / 'seed0'
    folder.mkdir(parents=True)
    (folder / 'summary.json').write_text('{"linprobe_top1": 0.5}')
    (folder / 'command.txt').write_text(shlex.join(run_command('MAE', 0, tmp_path, '')) + '\n')
    res = run_experiments(rows=['MAE'], seeds=(0,), out=tmp_path, baselines=False, fewlabel=False, log=lambda *a: None)
    assert [(r['row'], r['linprobe_top1']) for r in res] == [('MAE', 0.5)]          # same command: reused, nothing trained
    (folder / 'command.txt').write_text('cmae_pretrain --method mae --epochs 99 --out elsewhere\n')
    r = run(BIN / 'cmae_experiments', '--rows', 'MAE', '--no-baselines', '--no-fewlabel', '--out', tmp_path, '--seeds', '0',
            '--epochs', '1')
    assert r.returncode != 0 and 'a finished run of another command' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (folder / 'summary.json').read_text() == '{"linprobe_top1": 0.5}' and sorted(p.name for p in folder.iterdir()) == [
        'command.txt', 'summary.json']


def _children(pid):
    "Live child processes of `pid` (Linux /proc), zombies left out."
    kids = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try: fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError: continue
        if fields[0] != 'Z' and int(fields[1]) == pid: kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='reads child processes from /proc')
def test_experiments_sigterm_stops_the_running_pretrain(tmp_path):
    """SIGTERM to `cmae_experiments` (what `kill` and job schedulers send) stops the `cmae_pretrain` it is running too, with
    a one-line message; before, the child trained on and a second launch could write into the same folder."""
    import signal, time
    p = subprocess.Popen([str(BIN / 'cmae_experiments'), '--rows', 'MAE', '--no-baselines', '--no-fewlabel', '--seeds', '0',
                          '--out', str(tmp_path), '--epochs', '500', '--pretrain-args', ' '.join(TINY[2:])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        t0 = time.time()
        while not _children(p.pid) and p.poll() is None and time.time() - t0 < 120: time.sleep(0.2)
        kids = _children(p.pid)
        assert kids, f'no cmae_pretrain child appeared: {p.poll()}'
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode != 0 and err.strip().splitlines()[-1].startswith('cmae_experiments: stopped by signal'), err[-500:]
    time.sleep(0.5)
    alive = [k for k in kids if (Path('/proc') / str(k)).exists()
             and (Path('/proc') / str(k) / 'stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z']
    for k in alive: os.kill(k, signal.SIGKILL)      # a failing run must not leave a training process behind
    assert not alive, f'cmae_pretrain {alive} still running after SIGTERM to its runner'
    assert not (tmp_path / 'mae' / 'seed0' / 'summary.json').exists()
