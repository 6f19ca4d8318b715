"Committed notebooks stay small (outputs included), so diffs stay readable and the course book stays light."
from pathlib import Path
import json, re, pytest

NBS = sorted((Path(__file__).resolve().parent.parent / 'nbs').glob('*.ipynb'))
LIMIT = 1_000_000  # bytes


@pytest.mark.parametrize('nb', NBS, ids=[p.name for p in NBS])
def test_notebook_under_1mb(nb):
    size = nb.stat().st_size
    assert size < LIMIT, f'{nb.name} is {size / 1e6:.2f} MB; shrink its figures (dpi, figsize) or clear large outputs'


@pytest.mark.parametrize('nb', NBS, ids=[p.name for p in NBS])
def test_notebook_is_clean_json_with_export_cell(nb):
    cells = json.loads(nb.read_text())['cells']
    srcs = [''.join(c['source']) for c in cells]
    if nb.name != 'index.ipynb':
        assert any(s.startswith('#| default_exp ') for s in srcs), f'{nb.name} has no `#| default_exp` cell'


LEAKS = re.compile(r'\b\w*Warning: |site-packages/|/home/\w|/work/\w')


@pytest.mark.parametrize('nb', NBS, ids=[p.name for p in NBS])
def test_outputs_show_no_warnings_or_local_paths(nb):
    """A lesson's committed outputs are what a learner should read: no library warning, no path of the machine that ran it (the
    README is made from index.ipynb's outputs, so it is covered too)."""
    for i, c in enumerate(json.loads(nb.read_text())['cells']):
        for o in c.get('outputs', []):
            text = ''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', ''))
            m = LEAKS.search(text)
            assert not m, f'{nb.name} cell {i} shows {text[max(0, m.start() - 60):m.end() + 60]!r}'
