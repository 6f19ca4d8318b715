#!/usr/bin/env python
"""Time every lesson cell by cell, as `nbdev_test` runs them (cells marked `#| slow`, `#| cuda`, `#| notest` or
`eval: false` are skipped), and write the workshop timings that nbs/index.ipynb shows.

    python tools/time_lessons.py [--out results/lesson_timings.json] [--only 06]

    python tools/time_lessons.py --words      # prose words only (no execution), a line per lesson and per block

For each notebook: total seconds, the slowest cell (seconds and its first line) and the number of cells run, and its
prose words: all of them, and the workshop's (those before a markdown cell opening with `## Going further`, the part the
workshop path marks optional). WORKSHOP says which lessons make each one-hour block; a block's workshop words are at
most BLOCK_WORDS, so that a learner can read them, run the cells and do an exercise in the hour.
Each notebook runs in a fresh Python process, so its time includes the imports a learner's fresh kernel pays.
Cells over the workshop limit (180 s) are flagged; the run fails if a notebook fails. The machine (cores, load average
before and after) is recorded with the numbers, since a shared machine's load changes them.
"""
import argparse, json, os, platform, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 180
SKIP = {'slow', 'cuda', 'notest'}
BLOCK_WORDS = 6000
GOING_FURTHER = '## Going further'
WORKSHOP = {                         # lesson -> its block of the three-hour workshop; the other lessons are later reading
    '00_data': '1: data and masking', '00c_views': '1: data and masking', '01_patching': '1: data and masking',
    '02_vit': '1: data and masking', '04_mae': '1: data and masking',
    '06_ccrop': '2: what CMAE adds', '06a_box_refresh': '2: what CMAE adds', '07_contrastive': '2: what CMAE adds',
    '08_location': '2: what CMAE adds', '09_cmae': '2: what CMAE adds',
    '09b_config': '3: train and evaluate', '10_train': '3: train and evaluate', '12_eval': '3: train and evaluate',
    '13_cli': '3: train and evaluate', '16_experiments': '3: train and evaluate',
}


def prose_words(fn):
    "(workshop words, all words) of notebook `fn`'s markdown: words as `\\w+` runs; workshop = before `## Going further`."
    cells = json.loads(Path(fn).read_text(encoding='utf-8'))['cells']
    md = [''.join(c['source']) for c in cells if c['cell_type'] == 'markdown']
    cut = next((i for i, m in enumerate(md) if m.lstrip().startswith(GOING_FURTHER)), len(md))
    count = lambda parts: sum(len(re.findall(r'\w+', m)) for m in parts)
    return count(md[:cut]), count(md)


def block_words(nbs=ROOT / 'nbs'):
    "{block: workshop words of its lessons together}"
    out = {}
    for nb, block in WORKSHOP.items(): out[block] = out.get(block, 0) + prose_words(Path(nbs) / f'{nb}.ipynb')[0]
    return out


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
    ap.add_argument('--words', action='store_true', help='print prose words only, executing nothing')
    a = ap.parse_args()
    if a.words:
        for fn in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
            w, t = prose_words(fn)
            print(f"{fn.stem:18s} {WORKSHOP.get(fn.stem, 'later reading'):22s} workshop {w:5d}  all {t:5d} words")
        for b, w in sorted(block_words().items()): print(f"block {b:22s} {w:5d} words (at most {BLOCK_WORDS})")
        return
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
        words = prose_words(fn)
        res['notebooks'][fn.stem] = dict(ok=ok, total_s=total, cells=len(cells), slowest_cell_s=slow[0], slowest_cell=slow[1],
                                         over_limit=[c for c in cells if c[0] > LIMIT_S], workshop_words=words[0],
                                         words=words[1])
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
