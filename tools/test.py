#!/usr/bin/env python
"""Run every check of the project, in the order CI runs them.

    python tools/test.py [--flags slow] [--skip-pytest] [--only NB_SUBSTRING]

Stages, each timed:
  1. `nbdev_clean` changes nothing      (notebooks are committed clean)
  2. `nbdev_export` changes nothing     (the library is in sync with the notebooks)
  3. README.md is in sync with nbs/index.ipynb (tools/make_readme.py --check)
  4. `nbdev_test` on every notebook     (one notebook at a time, so each is timed)
  5. `pytest tests/`

A stage that would modify files (1, 2) is checked on a snapshot and the files are put back as they were,
so running the tests never rewrites your work. Exits non-zero on any failure and ends with one line
`tests: N passed, N failed, N skipped` counting notebooks and pytest tests together.
"""
import argparse, hashlib, subprocess, sys, time, tempfile, os
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _snapshot(paths):
    return {p: p.read_bytes() for p in paths if p.is_file()}


def _changed(before, paths):
    now = {p for p in paths if p.is_file()}
    changed = sorted({p for p in now if p not in before or before[p] != p.read_bytes()} | (set(before) - now))
    return changed


def _restore(before, paths):
    for p in paths:
        if p.is_file() and p not in before: p.unlink()
    for p, b in before.items(): p.write_bytes(b)


def _run(cmd, **kw):
    print('$', ' '.join(map(str, cmd)), flush=True)
    return subprocess.run(list(map(str, cmd)), cwd=ROOT, **kw)


def check_unchanged(tool, paths_fn):
    "Run an nbdev tool; fail (and restore the files) if it changed anything under `paths_fn()`."
    before = _snapshot(paths_fn())
    r = _run([BIN / tool])
    changed = _changed(before, paths_fn())
    if changed:
        _restore(before, paths_fn())
        print(f'FAIL: `{tool}` changed {len(changed)} file(s): ' + ', '.join(os.path.relpath(p, ROOT) for p in changed))
        print(f'      run `{tool}` yourself and commit the result.')
        return False
    if r.returncode != 0:
        print(f'FAIL: `{tool}` exited with {r.returncode}')
        return False
    return True


def notebooks(only=None):
    nbs = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))
    return [p for p in nbs if only is None or only in p.name]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--flags', default='', help='extra nbdev_test flags, e.g. "slow"')
    ap.add_argument('--only', default=None, help='only notebooks whose name contains this')
    ap.add_argument('--skip-pytest', action='store_true')
    args = ap.parse_args()

    passed = failed = skipped = 0
    stages, t_all = [], time.time()

    def stage(name, ok, t0):
        nonlocal passed, failed
        stages.append((name, ok, time.time() - t0))
        print(f'== {name}: {"ok" if ok else "FAILED"} ({time.time() - t0:.1f}s)', flush=True)

    nb_files = lambda: list((ROOT / 'nbs').glob('*.ipynb'))
    lib_files = lambda: list((ROOT / 'cmae_course').rglob('*.py'))

    t0 = time.time(); stage('nbdev_clean changes nothing', check_unchanged('nbdev_clean', nb_files), t0)
    t0 = time.time(); stage('nbdev_export changes nothing', check_unchanged('nbdev_export', lib_files), t0)
    t0 = time.time()
    r = _run([sys.executable, ROOT / 'tools' / 'make_readme.py', '--check'])
    stage('README.md in sync with nbs/index.ipynb', r.returncode == 0, t0)

    # nbdev_test, one notebook at a time so each one's time is visible
    nb_times, nb_failed = [], []
    for nb in notebooks(args.only):
        t0 = time.time()
        cmd = [BIN / 'nbdev_test', '--path', nb, '--do_print']
        if args.flags: cmd += ['--flags', args.flags]
        r = _run(cmd)
        dt = time.time() - t0
        nb_times.append((nb.name, dt, r.returncode == 0))
        if r.returncode == 0: passed += 1
        else: failed += 1; nb_failed.append(nb.name)
    stages.append(('nbdev_test', not nb_failed, sum(t for _, t, _ in nb_times)))
    print('== nbdev_test per notebook:')
    for name, dt, ok in nb_times: print(f'   {name:32s} {dt:7.1f}s  {"ok" if ok else "FAILED"}')

    if not args.skip_pytest:
        t0 = time.time()
        with tempfile.TemporaryDirectory() as d:
            xml = Path(d) / 'junit.xml'
            r = _run([sys.executable, '-m', 'pytest', 'tests', '-q', f'--junitxml={xml}'])
            if r.returncode not in (0, 1, 5): failed += 1  # collection/internal error
            if xml.exists():
                for ts in ET.parse(xml).getroot().iter('testsuite'):
                    n, f, e, s = (int(ts.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped'))
                    passed += n - f - e - s; failed += f + e; skipped += s
        stages.append(('pytest tests/', r.returncode in (0, 5), time.time() - t0))

    # stages 1-3 count as one check each
    for name, ok, _ in stages[:3]:
        if ok: passed += 1
        else: failed += 1

    print('\n== summary')
    for name, ok, dt in stages: print(f'   {name:42s} {dt:7.1f}s  {"ok" if ok else "FAILED"}')
    print(f'   total {time.time() - t_all:.1f}s')
    print(f'tests: {passed} passed, {failed} failed, {skipped} skipped')
    sys.exit(1 if failed or not all(ok for _, ok, _ in stages) else 0)


if __name__ == '__main__':
    main()
