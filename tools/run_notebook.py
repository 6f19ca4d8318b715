#!/usr/bin/env python
"""Execute lessons in place, so their committed outputs (prints, tables, figures) come from the code as it is now.

    python tools/run_notebook.py nbs/06_ccrop.ipynb [more notebooks] [--flags slow]

Cells run as `nbdev_test` runs them, in the notebook's folder with IN_TEST unset: cells marked `#| slow`, `#| cuda` or
`#| notest`, `eval: false` cells and the closing `nbdev_export()` cell are skipped and KEEP their previous outputs, unless
`--flags` names their flag (`--flags slow` also runs the slow cells and refreshes their outputs). Stops at the first
failing cell and leaves the notebook unchanged. Run `nbdev_clean` afterwards (tools/test.py checks it).
"""
import argparse, os, sys, time
from pathlib import Path


def directives(src):
    "The `#| ...` flags at the top of a cell's source."
    out = set()
    for line in src.splitlines():
        if not line.startswith('#|'): break
        out.update(w.strip().lower() for w in line[2:].replace(':', ' ').split())
    return out


def run(fn, flags=()):
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    fn = Path(fn).resolve()
    nb = read_nb(fn)
    skip = {'slow', 'cuda', 'notest'} - set(flags)

    def pre(cell):
        if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source: return True
        d = directives(cell.source)
        if ('eval' in d and 'false' in d) or skip & d: return True
        cell.outputs = []   # execnb only replaces outputs that are not empty: a cell that now prints nothing keeps none
        return False

    sh, t0 = CaptureShell(fn), time.perf_counter()
    with working_directory(fn.parent): sh.run_all(nb, exc_stop=True, preproc=pre)
    write_nb(nb, fn)
    print(f"{fn.name}: executed in {time.perf_counter() - t0:.0f} s")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='+')
    ap.add_argument('--flags', nargs='*', default=[], help='also run cells with these flags (e.g. slow)')
    a = ap.parse_args()
    os.environ.pop('IN_TEST', None)
    for f in a.notebooks: run(f, a.flags)
