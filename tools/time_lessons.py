#!/usr/bin/env python
"""Time every lesson cell by cell, as `nbdev_test` runs them (cells marked `#| slow`, `#| cuda`, `#| notest` or
`eval: false` are skipped), and write the workshop timings that nbs/index.ipynb shows.

    python tools/time_lessons.py [--out results/lesson_timings.json] [--only 06]

For each notebook: total seconds, the slowest cell (seconds and its first line) and the number of cells run.
Each notebook runs in a fresh Python process, so its time includes the imports a learner's fresh kernel pays.
Cells over the workshop limit (180 s) are flagged; the run fails if a notebook fails. The machine (cores, load average
before and after) is recorded with the numbers, since a shared machine's load changes them.
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 180
SKIP = {'slow', 'cuda', 'notest'}


def time_notebook(fn):
    "(ok, total seconds, [(seconds, first line) per executed cell])"
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    from fastcore.xtras import working_directory
    nb = NBProcessor(fn, process=True).nb
    cells, t = [], {}

    def pre(cell):
        if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source: return True
        d = getattr(cell, 'directives_', {}) or {}
        if d.get('eval:', [''])[0].lower() == 'false' or SKIP & d.keys(): return True
        t['start'] = time.perf_counter(); return False

    def post(cell):
        first = next((l for l in cell.source.splitlines() if l.strip() and not l.startswith('#|')), '')
        cells.append((round(time.perf_counter() - t['start'], 2), first[:80]))

    os.environ['IN_TEST'] = '1'
    sh, t0 = CaptureShell(fn), time.perf_counter()
    try:
        with working_directory(fn.parent): sh.run_all(nb, exc_stop=True, preproc=pre, postproc=post)
        ok = True
    except Exception:
        sys.stderr.write(sh.prettytb(fname=fn) + '\n'); ok = False
    return ok, round(time.perf_counter() - t0, 1), cells


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT / 'results' / 'lesson_timings.json'))
    ap.add_argument('--only', default='', help='only notebooks whose name contains this')
    ap.add_argument('--one', help=argparse.SUPPRESS)       # internal: time this one notebook, print JSON
    a = ap.parse_args()
    if a.one:
        ok, total, cells = time_notebook(Path(a.one))
        print('\nRESULT ' + json.dumps(dict(ok=ok, total=total, cells=cells))); return
    files = sorted(p for p in (ROOT / 'nbs').glob('[0-9]*.ipynb') if a.only in p.name)
    res = dict(machine=dict(cores=os.cpu_count(), cpu=platform.processor() or platform.machine(),
                            loadavg_before=[round(x, 2) for x in os.getloadavg()]), limit_s=LIMIT_S, notebooks={})
    failed = []
    for fn in files:                       # each notebook in a fresh process, as a learner's fresh kernel: imports included
        r = subprocess.run([sys.executable, __file__, '--one', str(fn)], capture_output=True, text=True)
        line = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
        if not line: sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:]); ok, total, cells = False, 0., []
        else: d = json.loads(line[-1][7:]); ok, total, cells = d['ok'], d['total'], [tuple(c) for c in d['cells']]
        if not ok: sys.stderr.write(r.stderr[-3000:])
        slow = max(cells, default=(0., ''))
        res['notebooks'][fn.stem] = dict(ok=ok, total_s=total, cells=len(cells), slowest_cell_s=slow[0], slowest_cell=slow[1],
                                         over_limit=[c for c in cells if c[0] > LIMIT_S])
        print(f"{fn.stem:18s} {'ok  ' if ok else 'FAIL'} {total:6.1f} s  {len(cells):3d} cells  slowest {slow[0]:6.1f} s: {slow[1]}", flush=True)
        if not ok: failed.append(fn.stem)
    res['machine']['loadavg_after'] = [round(x, 2) for x in os.getloadavg()]
    res['total_s'] = round(sum(n['total_s'] for n in res['notebooks'].values()), 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"total {res['total_s']:.0f} s; written to {a.out}")
    if failed: sys.exit(f"failed: {', '.join(failed)}")


if __name__ == '__main__':
    main()
