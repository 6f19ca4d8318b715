"Checks on the project's skeleton: the README is generated from index.ipynb, the test runner restores files, pins hold."
import json, shutil, subprocess, sys, configparser, importlib
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True)


def test_readme_in_sync():
    r = run(ROOT / 'tools' / 'make_readme.py', '--check')
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_check_detects_stale(tmp_path):
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    nb['cells'][0]['source'] = '# a different title\n'
    (tmp_path / 'index.ipynb').write_text(json.dumps(nb))
    shutil.copy(ROOT / 'README.md', tmp_path / 'README.md')
    r = run(ROOT / 'tools' / 'make_readme.py', '--check', '--nb', tmp_path / 'index.ipynb', '--out', tmp_path / 'README.md')
    assert r.returncode == 1 and 'stale' in r.stdout
    r = run(ROOT / 'tools' / 'make_readme.py', '--nb', tmp_path / 'index.ipynb', '--out', tmp_path / 'README.md')
    assert r.returncode == 0 and (tmp_path / 'README.md').read_text().splitlines()[2] == '# a different title'


def test_readme_has_the_two_commands():
    text = (ROOT / 'README.md').read_text()
    assert 'python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/cmae_pretrain' in text
    assert 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/python tools/test.py' in text
    ci = (ROOT / '.ci' / 'run').read_text()
    assert "grep -m1 -F '.venv/bin/python tools/test.py' README.md" in ci


def test_settings_pins_and_flags():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    d = cfg['DEFAULT']
    for pin in ['torch==2.14.1', 'torchvision==0.29.1', 'fastai==2.8.7', 'fastcore>=1.8,<2']: assert pin in d['requirements']
    for pin in ['nbdev==2.4.14', 'execnb>=0.1.12,<0.2']: assert pin in d['dev_requirements']
    assert d['tst_flags'].split() == ['notest', 'slow', 'cuda']
    # every command is declared and points at a callable (the console scripts are `main` functions since they
    # stopped rewriting sys.argv at import time)
    scripts = dict(s.split('=') for s in d['console_scripts'].split())
    assert set(scripts) == {'cmae_pretrain', 'cmae_eval', 'cmae_bench', 'cmae_experiments'}, scripts
    for name, target in scripts.items():
        mod, fn = target.split(':')
        assert callable(getattr(importlib.import_module(mod), fn, None)), f'{name} -> {target}'


def test_check_unchanged_restores_files(tmp_path, monkeypatch):
    "tools/test.py must fail a stage whose tool rewrites files, and put the files back."
    sys.path.insert(0, str(ROOT / 'tools'))
    import test as runner
    f = tmp_path / 'a.py'; f.write_text('original\n')
    fake_bin = tmp_path / 'bin'; fake_bin.mkdir()
    tool = fake_bin / 'rewriter'; tool.write_text(f'#!/bin/sh\necho changed > {f}\n'); tool.chmod(0o755)
    monkeypatch.setattr(runner, 'BIN', fake_bin)
    assert runner.check_unchanged('rewriter', lambda: [f]) is False
    assert f.read_text() == 'original\n'
    tool.write_text('#!/bin/sh\ntrue\n')
    assert runner.check_unchanged('rewriter', lambda: [f]) is True


def test_imports():
    r = subprocess.run([sys.executable, '-c', 'import cmae_course, fastai.vision.all, nbdev; print(cmae_course.__version__)'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _module_lessons():
    "module name -> the notebook that exports it (its `#| default_exp`)."
    out = {}
    for f in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for c in json.loads(f.read_text())['cells']:
            src = ''.join(c['source'])
            if src.startswith('#| default_exp '): out[src.split()[2]] = f.stem
    return out


def test_library_modules_import_only_earlier_lessons():
    "Dependencies flow one way in lesson order: a module imports only modules built by earlier notebooks."
    import re
    lessons = _module_lessons()
    bad = []
    for mod, nb in lessons.items():
        src = (ROOT / 'cmae_course' / f'{mod}.py').read_text()
        for dep in set(re.findall(r'^\s*from \.(\w+) import', src, re.M)):
            if lessons[dep] > nb: bad.append(f'{mod} ({nb}) imports {dep} ({lessons[dep]})')
    assert not bad, bad


def test_library_modules_are_small_and_import_at_the_top():
    """No library module over 350 lines; imports inside functions only where they keep a dependency that is not the
    course's own (pandas, through fastai) out of a module that does not otherwise load it."""
    import re
    allowed = {('decoders', 'import pandas as pd')}
    for mod in _module_lessons():
        lines = (ROOT / 'cmae_course' / f'{mod}.py').read_text().splitlines()
        assert len(lines) <= 350, f'cmae_course/{mod}.py has {len(lines)} lines'
        inner = {(mod, l.strip()) for l in lines if re.match(r'\s+(import |from \S+ import )', l)}
        assert inner <= allowed, inner - allowed


def test_forked_notebook_runner_reports_each_notebook(tmp_path):
    """tools/test.py runs each notebook in a child forked from one process that imported torch once: a failing cell fails
    that notebook only, a `#| slow` cell is skipped unless `--flags slow`, and a name one notebook defines does not leak
    into the next."""
    def nb(name, *cells):
        f = tmp_path / name
        f.write_text(json.dumps(dict(nbformat=4, nbformat_minor=5, metadata={}, cells=[
            dict(cell_type='code', execution_count=None, metadata={}, outputs=[], source=c) for c in cells])))
        return f
    ok = nb('ok.ipynb', 'leak = 1\nassert 1 + 1 == 2', '#| slow\nraise RuntimeError("slow cell ran")')
    bad = nb('bad.ipynb', 'assert 1 + 1 == 3')
    leaks = nb('leaks.ipynb', 'leak')
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tools')!r}); import test as t; from pathlib import Path\n"
            f"for flags in ('', 'slow'):\n"
            f"    one = t.forked_notebook_runner(flags)\n"
            f"    print(flags or '-', *[one(Path(p)) for p in {[str(ok), str(bad), str(leaks)]!r}])")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [l for l in r.stdout.splitlines() if not l.startswith(('$', 'Starting', '- Completed'))] == [
        '- True False False', 'slow False False False'], r.stdout
    assert 'slow cell ran' in r.stderr and '1 + 1 == 3' in r.stderr
