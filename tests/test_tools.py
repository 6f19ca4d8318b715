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
