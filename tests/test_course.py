"""The lessons read as a course: each block of the workshop fits its hour, each lesson teaches in the present tense and
cites what learners can open, every lesson has an exercise a learner can check, the experiment lesson stays short, and
the README is a first page."""
import json, re, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))
import time_lessons  # noqa: E402

LESSONS = sorted((ROOT / 'nbs').glob('[0-9]*.ipynb'))
HISTORY = re.compile(r"first solver|earlier defaults|defaults? (then|before)|made_by|first try|first version|probed again"
                     r"|probe_then", re.I)
HASH = re.compile(r"(?<![\w.])(?=[0-9a-f]*\d)(?=(?:[0-9]*[a-f]){2})[0-9a-f]{7,40}\b")


def cells(f): return json.loads(f.read_text(encoding='utf-8'))['cells']
def src(c): return ''.join(c['source'])
def outputs_text(c):
    return ''.join(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', ''))
                   for o in c.get('outputs', []))
def directives(s): return {l[2:].strip().split(':')[0].split()[0] for l in s.splitlines() if l.startswith('#|') and l[2:].strip()}


@pytest.mark.parametrize('f', LESSONS, ids=lambda f: f.stem)
def test_lesson_speaks_in_the_present_tense(f):
    "No history phrases in prose, code or outputs, no commit hashes in prose: how results were found lives in results/README.md."
    for c in cells(f):
        text = src(c) + (outputs_text(c) if c['cell_type'] == 'code' else '')
        assert not HISTORY.search(text), f'{f.stem}: {HISTORY.search(text).group()!r} in {src(c)[:80]!r}'
        if c['cell_type'] == 'markdown': assert not HASH.search(text), f'{f.stem}: commit hash {HASH.search(text).group()}'


@pytest.mark.parametrize('f', LESSONS + [ROOT / 'nbs' / 'index.ipynb'], ids=lambda f: f.stem)
def test_lesson_cites_public_sources_only(f):
    text = '\n'.join(src(c) for c in cells(f))
    assert 'references.md' not in text and 'shared/notes' not in text and '../shared' not in text, f.stem


@pytest.mark.parametrize('f', LESSONS, ids=lambda f: f.stem)
def test_lesson_has_an_exercise_a_learner_can_check(f):
    """`## Exercises`; each exercise's placeholder (`#| notest`, skipped by the tests) calls a `check_...` function, and a
    worked answer (`#| answer`, run by the tests) passes the same check."""
    cs = cells(f)
    assert any(c['cell_type'] == 'markdown' and src(c).lstrip().startswith('## Exercises') for c in cs), f.stem
    lesson_code = [src(c) for c in cs if c['cell_type'] == 'code' and not directives(src(c)) & {'export', 'exporti'}]
    checks = set(re.findall(r'^def (check_\w+)\(', '\n'.join(lesson_code), re.M))
    assert checks, f'{f.stem}: no check_... function'
    placeholders = [src(c) for c in cs if c['cell_type'] == 'code' and 'notest' in directives(src(c))]
    answers = [src(c) for c in cs if c['cell_type'] == 'code' and 'answer' in directives(src(c))]
    assert answers, f'{f.stem}: no worked answer (#| answer)'
    for name in checks:
        assert any(name + '(' in p for p in placeholders), f'{f.stem}: no placeholder cell calls {name}'
        assert any(name + '(' in a for a in answers), f'{f.stem}: no worked answer passes {name}'


def test_each_workshop_block_fits_its_hour():
    blocks = time_lessons.block_words()
    assert len(blocks) == 3
    for b, w in blocks.items(): assert w <= time_lessons.BLOCK_WORDS, f'block {b}: {w} words of prose'


@pytest.mark.parametrize('f', LESSONS, ids=lambda f: f.stem)
def test_lesson_is_at_most_4000_words(f):
    assert time_lessons.prose_words(f)[1] <= 4000, f.stem


def test_prose_words_counts_the_workshop_part_before_going_further(tmp_path):
    nb = dict(cells=[dict(cell_type='markdown', source=['one two three']), dict(cell_type='code', source=['x = 1 2 3']),
                     dict(cell_type='markdown', source=['## Going further\n', 'four five']),
                     dict(cell_type='markdown', source=['six'])])
    (tmp_path / 'a.ipynb').write_text(json.dumps(nb))
    assert time_lessons.prose_words(tmp_path / "a.ipynb") == (3, 8)      # "Going further" counts in the whole


def test_experiment_lesson_is_short_and_leads_with_its_verdict():
    cs = cells(ROOT / 'nbs' / '16_experiments.ipynb')
    assert len(cs) <= 45, f'{len(cs)} cells'
    heads = [l for c in cs if c['cell_type'] == 'markdown' for l in src(c).splitlines() if l.startswith('## ')]
    first_ablation = next(i for i, h in enumerate(heads) if 'ablation' in h.lower() or 'each part' in h.lower())
    first_verdict = next(i for i, h in enumerate(heads) if 'main comparison' in h.lower() or 'verdict' in h.lower())
    assert first_verdict < first_ablation, heads


def test_readme_is_a_first_page():
    text = (ROOT / 'README.md').read_text()
    assert len(re.findall(r'\w+', text)) <= 2500
