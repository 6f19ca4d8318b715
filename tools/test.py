#!/usr/bin/env python
"""Run every check of the project, in the order CI runs them.

    python tools/test.py [--flags slow] [--skip-pytest] [--only NB_SUBSTRING]

Stages, each timed:
  1. `nbdev_clean` changes nothing      (notebooks are committed clean)
  2. `nbdev_export` changes nothing     (the library is in sync with the notebooks)
  3. README.md is in sync with nbs/index.ipynb (tools/make_readme.py --check)
  4. every notebook's tests, as `nbdev_test` runs them (nbdev's own `test_nb`, the same skip flags), one notebook
     at a time so each is timed. Each notebook runs in its own process, forked from one that has imported torch,
     fastai and matplotlib once: a notebook sees nothing another one did, and the 28 imports of torch (about
     3 s each on 2 cores, half of this stage) are paid once. Where there is no fork (Windows), `nbdev_test` per notebook.
  5. `pytest tests/`

A stage that would modify files (1, 2) is checked on a snapshot and the files are put back as they were,
so running the tests never rewrites your work. Exits non-zero on any failure and ends with one line
`tests: N passed, N failed, N skipped` counting notebooks and pytest tests together.
"""
import argparse, contextlib, hashlib, subprocess, sys, time, tempfile, os
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


def forked_notebook_runner(flags=''):
    """Import what every lesson imports, once, then return `test_one(nb) -> bool`: nbdev's `test_nb` on `nb` (the skip
    flags of settings.ini, less `flags`) in a child forked from this process, so that the notebooks share the imports and
    nothing else. Nothing has run a torch op here yet, so no thread pool is forked half-way."""
    import cmae_course, torch, fastai.vision.all, matplotlib        # noqa: F401 (imported to be inherited)
    matplotlib.use('Agg')
    from nbdev.test import test_nb
    from nbdev.config import get_config
    cfg = get_config(cfg_name='settings.ini', path=ROOT)
    skip, force = cfg.tst_flags.split(), flags.split()

    def test_one(nb):
        print(f'$ nbdev_test --path {os.path.relpath(nb, ROOT)}' + (f' --flags {flags!r}' if flags else '') + '  (forked)',
              flush=True)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                                   # the child: run the notebook, report by exit status
            code = 1
            try:
                with contextlib.chdir(cfg.nbs_path):
                    code = 0 if test_nb(nb.absolute(), skip_flags=skip, force_flags=force, do_print=True,
                                        basepath=cfg.config_path)[0] else 1
            finally:
                sys.stdout.flush(); sys.stderr.flush()
                os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    return test_one


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

    # the notebooks, one at a time so each one's time is visible
    nb_times, nb_failed = [], []
    test_one = forked_notebook_runner(args.flags) if hasattr(os, 'fork') else None
    for nb in notebooks(args.only):
        t0 = time.time()
        if test_one: ok = test_one(nb)
        else:
            cmd = [BIN / 'nbdev_test', '--path', nb, '--do_print']
            if args.flags: cmd += ['--flags', args.flags]
            ok = _run(cmd).returncode == 0
        dt = time.time() - t0
        nb_times.append((nb.name, dt, ok))
        if ok: passed += 1
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
