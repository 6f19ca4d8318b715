"Commands that lessons tell a user to run from tools/, run as written (with a timeout, so a hang fails)."
import os, re, subprocess, sys
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


def test_make_glyphs_writes_an_image_folder_of_visible_letters(tmp_path):
    """Lesson 16_experiments: `python tools/make_glyphs.py --out data/glyphs`, run as written in a scratch copy of tools/ (so the
    repository's own data/ is left alone): 10 classes x (300 train + 50 val) PNGs, the same bytes for the same seed, and every
    letter drawn at least 80 of 255 in luminance away from the background under it."""
    cmd = 'python tools/make_glyphs.py --out data/glyphs'
    assert cmd in (ROOT / 'nbs' / '16_experiments.ipynb').read_text()
    (tmp_path / 'tools').mkdir()
    (tmp_path / 'tools' / 'make_glyphs.py').write_bytes((ROOT / 'tools' / 'make_glyphs.py').read_bytes())
    r = subprocess.run([sys.executable, *cmd.split()[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / 'data' / 'glyphs'
    for split, n in (('train', 300), ('val', 50)):
        classes = sorted(p.name for p in (out / split).iterdir())
        assert classes == sorted('ACEFHKMRSX'), classes
        assert all(len(list((out / split / c).glob('*.png'))) == n for c in classes)
    sys.path.insert(0, str(tmp_path / 'tools'))
    try:
        import numpy as np
        from PIL import Image
        import make_glyphs
        again = make_glyphs.render('A', np.random.default_rng([0, 0, 0, 0]), make_glyphs.fonts(), make_glyphs.backgrounds())
        assert np.array_equal(np.asarray(again), np.asarray(Image.open(out / 'train' / 'A' / 'A_0.png')))
        rng = np.random.default_rng(0)
        for bg in (np.full((8, 8, 3), 250, np.uint8), np.full((8, 8, 3), 5, np.uint8), np.full((8, 8, 3), 128, np.uint8)):
            for _ in range(50):
                col = make_glyphs._visible_colour(bg, rng)
                assert abs(make_glyphs._luma(col) - make_glyphs._luma(bg)) >= 80, (bg[0, 0], col)
    finally:
        sys.path.remove(str(tmp_path / 'tools'))
        sys.modules.pop('make_glyphs', None)
