"Commands that lessons tell a user to run from tools/, run as written (with a timeout, so a hang fails)."
import json, os, re, subprocess, sys
import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_probe_loop_prints_the_ratio():
    "Lesson 12_eval: `OMP_NUM_THREADS=1 python tools/bench_probe_loop.py` prints both times and their ratio."
    text = (ROOT / 'nbs' / '12_eval.ipynb').read_text()
    assert 'OMP_NUM_THREADS=1 python tools/bench_probe_loop.py' in text
    r = subprocess.run([sys.executable, 'tools/bench_probe_loop.py'], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'hand loop ([\d.]+) s, fastai Learner ([\d.]+) s: Learner / loop = ([\d.]+)x', r.stdout)
    assert m, r.stdout
    loop, learner, ratio = map(float, m.groups())
    assert loop > 0 and learner > 0 and abs(ratio - learner / loop) < 0.06


@pytest.mark.parametrize('cmd', ['python tools/make_glyphs.py --out data/glyphs',
                                 'python tools/make_glyphs.py --out data/glyphs-bold --bold 0.06'])
def test_make_glyphs_writes_an_image_folder_of_visible_letters(tmp_path, cmd):
    """Lesson 16_experiments: both `make_glyphs` commands, run as written in a scratch copy of tools/ (so the repository's own
    data/ is left alone): 10 classes x (300 train + 50 val) PNGs, the same bytes for the same seed, and every letter drawn at
    least 80 of 255 in luminance away from the background under it."""
    assert cmd in (ROOT / 'nbs' / '16_experiments.ipynb').read_text()
    bold = float(cmd.split('--bold ')[1]) if '--bold' in cmd else 0.
    (tmp_path / 'tools').mkdir()
    (tmp_path / 'tools' / 'make_glyphs.py').write_bytes((ROOT / 'tools' / 'make_glyphs.py').read_bytes())
    r = subprocess.run([sys.executable, *cmd.split()[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / cmd.split('--out ')[1].split()[0]
    for split, n in (('train', 300), ('val', 50)):
        classes = sorted(p.name for p in (out / split).iterdir())
        assert classes == sorted('ACEFHKMRSX'), classes
        assert all(len(list((out / split / c).glob('*.png'))) == n for c in classes)
    sys.path.insert(0, str(tmp_path / 'tools'))
    try:
        import numpy as np
        from PIL import Image
        import make_glyphs
        again = make_glyphs.render('A', np.random.default_rng([0, 0, 0, 0]), make_glyphs.fonts(), make_glyphs.backgrounds(), 64, bold)
        assert np.array_equal(np.asarray(again), np.asarray(Image.open(out / 'train' / 'A' / 'A_0.png')))
        rng = np.random.default_rng(0)
        for bg in (np.full((8, 8, 3), 250, np.uint8), np.full((8, 8, 3), 5, np.uint8), np.full((8, 8, 3), 128, np.uint8)):
            for _ in range(50):
                col = make_glyphs._visible_colour(bg, rng)
                assert abs(make_glyphs._luma(col) - make_glyphs._luma(bg)) >= 80, (bg[0, 0], col)
    finally:
        sys.path.remove(str(tmp_path / 'tools'))
        sys.modules.pop('make_glyphs', None)


def test_make_glyphs_bold_thickens_letters_and_refuses_bad_values(tmp_path):
    """`--bold 0.06` (lesson 16's legible-letters folder) draws the same letter with more ink; a value outside [0, 0.2] is one line naming --bold, and nothing is written."""
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        import numpy as np
        from PIL import Image
        import make_glyphs
        font = make_glyphs.fonts()[0]
        def ink(bold):
            img = Image.new('RGB', (64, 64))
            make_glyphs._glyph(img, 'H', font, 40, np.random.default_rng(0), 64, bold)
            return int((np.asarray(img).max(-1) > 0).sum())
        assert ink(0.06) > 1.3 * ink(0.) > 0, (ink(0.06), ink(0.))
    finally:
        sys.path.remove(str(ROOT / 'tools'))
        sys.modules.pop('make_glyphs', None)
    for bad in ('0.5', '-0.1'):
        r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_glyphs.py'), '--out', 'g', '--bold', bad], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and '--bold: must be in [0, 0.2]' in r.stderr.strip().splitlines()[-1], r.stderr
        assert not (tmp_path / 'g').exists()


def test_location_causes_trains_each_condition_and_writes_json(tmp_path):
    """Lesson 08_location: `python tools/location_causes.py` (the command recorded in results/location_causes.json, which the
    lesson reads), here at 60 steps and two conditions into a scratch file (the full run is ten minutes of 2 cores); bad input
    is one line naming the option, and nothing is written."""
    import json
    recorded = json.loads((ROOT / 'results' / 'location_causes.json').read_text())['command']
    assert recorded == 'python tools/location_causes.py' and recorded in (ROOT / 'nbs' / '08_location.ipynb').read_text()
    out = tmp_path / 'lc.json'
    cmd = [sys.executable, 'tools/location_causes.py', '--out', str(out), '--steps', '60', '--conditions',
           'plain,CMAE views + lighting', '--jobs', '1']
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [d['condition'] for d in res['runs']] == ['plain', 'CMAE views + lighting']
    assert res['chance'] == 1 / 64 and "--conditions 'plain,CMAE views + lighting'" in res['command']
    for d in res['runs']:
        assert 0 <= d['acc'] <= d['near'] <= 1 and d['steps'] == 60 and 3 < d['loss'] < 5
    assert r.stdout.count('x chance') == 2
    for bad, msg in ((['--conditions', 'plain,sky'], "--conditions: unknown 'sky'"), (['--steps', '10'], '--steps 10: must be'),
                     (['--out', str(tmp_path / 'no' / 'x.json')], 'does not exist')):
        r = subprocess.run([sys.executable, 'tools/location_causes.py', *bad], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert not (tmp_path / 'no').exists()


def test_lighting_is_the_documented_gain():
    """The position cue of tools/location_causes.py: 1.25 at the top centre, 0.75 at the bottom centre, 0.5 in the lower corners;
    the field of the generator's `light` option (cmae_course.data.light_field), up to rounding."""
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        import torch, location_causes
        lit = location_causes.lighting(torch.full((1, 3, 65, 65), 100, dtype=torch.uint8)).float()
        assert lit[0, 0, 0, 32] == 125 and lit[0, 0, 64, 32] == 75 and lit[0, 0, 64, 0] == 50 and lit[0, 0, 32, 32] == 125
        from cmae_course.data import light_field        # the generator's `light` option: the same field
        assert (lit[0, 0] - 100 * torch.from_numpy(light_field(65, 0.5))).abs().max() <= 0.5 + 1e-4
    finally:
        sys.path.remove(str(ROOT / 'tools')); sys.modules.pop('location_causes', None)


def test_ccrop_table_measures_every_map_and_the_pixel_floor(tmp_path):
    """Lesson 06a_box_refresh: `python tools/ccrop_table.py NAME=RUN_FOLDER ...` on a run folder (here an untrained encoder that
    `cmae_pretrain --epochs 0` writes in seconds, every 50th training image instead of every 5th): every heatmap source, the
    whole-image row and the raw-pixel floor at each threshold, and the command recorded with its quoting. Bad input is one line
    naming the argument, and nothing is written."""
    import json, shutil
    assert 'python tools/ccrop_table.py untrained=runs/u0' in (ROOT / 'nbs' / '06a_box_refresh.ipynb').read_text()
    exe = shutil.which('cmae_pretrain') or str(Path(sys.executable).parent / 'cmae_pretrain')
    run = tmp_path / 'u0'
    r = subprocess.run([exe, '--epochs', '0', '--no-floor', '--no-figures', '--no-probe', '--out', str(run)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / 'table.json'
    tool = [sys.executable, 'tools/ccrop_table.py']
    r = subprocess.run([*tool, f'untrained, init={run}', '--every', '50', '--out', str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        import ccrop_table
        sources, ks = ccrop_table.SOURCES, ccrop_table.KS
    finally:
        sys.path.remove(str(ROOT / 'tools')); sys.modules.pop('ccrop_table', None)
    rows = res['tables']['untrained, init']['rows']
    assert set(rows) == set(sources) | {'whole image', 'pixels:median', 'pixels:posfree'} and res['n_images'] == 100
    assert all(len(v) == len(ks) and all(0 <= x <= 1 for x in v) for v in rows.values())
    by_rank = res['tables']['untrained, init']['posfree_pre_norm_by_rank']
    assert list(by_rank) == [str(r) for r in ccrop_table.RANKS] and by_rank['8'] == rows['features:posfree:pre_norm']
    assert f"'untrained, init={run}'" in res['command']
    assert max(rows['pixels:median']) > rows['whole image'][0] + 0.1       # the objects stand out in the pixels themselves
    for bad, msg in (([f'untrained{run}'], 'expected NAME=RUN_FOLDER'), ([f'x={tmp_path}'], 'encoder.pt does not exist'),
                     ([f'x={run}', '--every', '0'], '--every 0: must be'),
                     ([f'x={run}', '--data', str(tmp_path)], 'no train/ folder there'),
                     ([f'x={run}', '--out', str(tmp_path / 'no' / 'x.json')], 'its folder does not exist')):
        r = subprocess.run([*tool, *bad], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()[-1]) < 300, r.stderr
    assert not (tmp_path / 'no').exists()


def test_budget_curve_commands_and_bad_input(tmp_path):
    "Each multiple is one cmae_experiments --main command with its own folder; bad options fail with one line."
    sys.path.insert(0, str(ROOT / 'tools'))
    import budget_curve
    cmds = dict(budget_curve.commands('d', [0, 1, 8], [0, 1], 'runs/b', ['MAE', 'CMAE'], '--precision fp32'))
    assert cmds[0][cmds[0].index('--rows') + 1] == 'ViT, untrained' and '--epochs' not in cmds[0]
    assert cmds[8][cmds[8].index('--epochs') + 1] == '80' and cmds[8][-1] == 'runs/b/x8'
    assert cmds[1][cmds[1].index('--seeds') + 1] == '0,1' and cmds[1][cmds[1].index('--rows') + 1] == 'MAE,CMAE'
    cmds = dict(budget_curve.commands('d', [1, 4], [0], 'runs/b', ['MAE', 'CMAE'], '', {4: ['MAE']}))
    assert cmds[4][cmds[4].index('--rows') + 1] == 'MAE' and cmds[1][cmds[1].index('--rows') + 1] == 'MAE,CMAE'
    for args, msg in ((['--data', str(tmp_path), '--multiples', '1,x'], 'comma-separated integers'),
                      (['--data', str(tmp_path), '--multiples', '-1'], 'a multiple is >= 0'),
                      (['--data', str(tmp_path / 'nope')], 'no such folder'),
                      (['--data', str(tmp_path), '--rows-at', 'four'], 'expected M=ROWS')):
        r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'budget_curve.py'), *args], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode != 0 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_budget_curve_file_holds_the_commands_its_command_makes():
    "results/letters_budget.json: its recorded tool command, parsed again, gives exactly the per-multiple commands it holds."
    f = ROOT / 'results' / 'letters_budget.json'
    if not f.exists(): pytest.skip('no budget curve committed')
    sys.path.insert(0, str(ROOT / 'tools'))
    import budget_curve, shlex
    d = json.loads(f.read_text())
    argv = shlex.split(d['command'])[2:]
    pairs = list(zip(argv[::2], argv[1::2]))
    a = dict(pairs)
    rows_at = {int(v.split('=')[0]): v.split('=', 1)[1].split(',') for k, v in pairs if k == '--rows-at'}
    made = [shlex.join(c) for _, c in budget_curve.commands(
        a['--data'], [int(m) for m in a['--multiples'].split(',')], [int(s) for s in a['--seeds'].split(',')], a['--out'],
        a.get('--rows', 'MAE,CMAE').split(','), a.get('--pretrain-args', '--precision fp32'), rows_at)]
    assert made == [c['command'] for c in d['curve']]
