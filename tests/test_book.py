"""The offline course book (tools/make_book.py): it builds from the committed notebooks, its links resolve, it fetches
nothing from the network, every formula is MathML (no raw TeX left outside code), every interactive explorer shows its
static view, and a headless Chromium renders its index and a lesson with their figures, and the lessons' formulas as
MathML."""
import html.parser, json, os, re, shutil, subprocess, sys
from pathlib import Path
from urllib.parse import unquote, urlparse
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))
import make_book  # noqa: E402

LESSON = '01_patching'     # a lesson with figures in its first screens
EXPLORERS = {'01_patching', '04_mae', '06a_box_refresh', '08_location'}     # lessons with an ipywidgets explorer


class Refs(html.parser.HTMLParser):
    "Every id, every <a href>, and every resource a browser would fetch (script/img/link/iframe/source src or href)."
    def __init__(self):
        super().__init__(); self.ids, self.links, self.fetches = set(), [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        if tag in ('script', 'img', 'iframe', 'source', 'video', 'audio', 'embed') and a.get('src'): self.fetches.append(a['src'])
        if tag == 'link' and a.get('href'): self.fetches.append(a['href'])


def parse(f):
    p = Refs(); p.feed(f.read_text(encoding='utf-8')); return p


class Prose(html.parser.HTMLParser):
    "The text a reader sees outside code (<code>, <pre>, highlighted cells), scripts, styles and formulas (<math>)."
    SKIP = {'code', 'pre', 'script', 'style', 'math', 'kbd', 'samp'}
    def __init__(self):
        super().__init__(); self.stack, self.text = [], []
    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP: self.stack.append(tag)
    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag: pass
    def handle_data(self, data):
        if not self.stack: self.text.append(data)


# raw TeX: `$\` (a formula starting with a command), or `$x_q$`-shaped spans (TeX's rule: no space after the
# opening `$` nor before the closing one, so "$5 or $10" is not one)
RAW_TEX = re.compile(r'\$\\|\$[^$\s](?:[^$]*?[^$\s])?\$')


def raw_tex(text):
    "Raw TeX formulas in the prose of HTML `text`, with some context."
    p = Prose(); p.feed(text); prose = ''.join(p.text)
    return [prose[max(0, m.start() - 40):m.end() + 40] for m in RAW_TEX.finditer(prose)]


@pytest.fixture(scope='module')
def book(tmp_path_factory):
    out = tmp_path_factory.mktemp('book')
    pages = make_book.build(ROOT / 'nbs', out, log=lambda *a: None)
    return out, pages


def test_every_notebook_has_a_page(book):
    out, pages = book
    nbs = {p.stem for p in (ROOT / 'nbs').glob('*.ipynb') if not p.name.startswith('_')}
    assert {p.stem for p in pages} == nbs
    assert (out / 'index.html').exists()


def test_links_resolve(book):
    "Every relative link points to a page that exists, and every #anchor to an id on that page."
    out, pages = book
    parsed = {p.name: parse(p) for p in pages}
    bad = []
    for name, p in parsed.items():
        for href in p.links:
            u = urlparse(href)
            if u.scheme in ('http', 'https', 'mailto'): continue
            target = unquote(u.path) or name
            if target not in parsed: bad.append(f'{name}: {href} (no page {target})'); continue
            if u.fragment and not {u.fragment, unquote(u.fragment)} & parsed[target].ids: bad.append(f'{name}: {href} (no id {u.fragment})')
    assert not bad, '\n'.join(bad[:20])
    lessons = [h for h in parsed['index.html'].links if h.endswith('.html')]
    assert len(set(lessons)) == len(pages), 'the index links every lesson'


def test_link_checker_catches_a_dead_link(book, tmp_path):
    "The check above can fail: a page with a link to a missing lesson is reported."
    f = tmp_path / 'x.html'
    f.write_text('<a href="99_missing.html">gone</a>')
    assert parse(f).links == ['99_missing.html']
    assert not (book[0] / '99_missing.html').exists()


def test_fetches_nothing_from_the_network(book):
    "No page loads a script, stylesheet, image or frame from anywhere but itself (figures are data: URIs)."
    out, pages = book
    for f in pages:
        ext = [s for s in parse(f).fetches if not s.startswith('data:')]
        assert not ext, f'{f.name} fetches {ext[:3]}'
        assert not re.search(r'@import|url\(\s*["\']?https?:', f.read_text(encoding='utf-8')), f'{f.name} pulls CSS from the network'


def test_hidden_cells_and_directives_are_left_out(book):
    out, _ = book
    text = (out / f'{LESSON}.html').read_text(encoding='utf-8')
    assert '#| export' not in text and '#| hide' not in text and 'nbdev_export()' not in text
    assert text.count('<img') >= 2, 'the lesson keeps its figures'
    assert '.ipynb"' not in text, 'links between lessons point to pages'


def _answer_cells(f):
    return sum(c['cell_type'] == 'code' and 'answer' in make_book.directives(''.join(c['source']))
               for c in json.loads(f.read_text())['cells'])


def test_every_worked_answer_is_folded(book):
    "Each `#| answer` cell of a lesson is on its page inside a closed <details>, after the exercise it answers."
    out, _ = book
    for f in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        text = (out / f'{f.stem}.html').read_text(encoding='utf-8')
        assert text.count('<details class="answer">') == _answer_cells(f), f.stem
        assert '<details class="answer" open' not in text


def test_fold_answers_wraps_the_whole_cell(tmp_path):
    import nbformat
    nb = _mini_nb('# Exercise')
    nb.cells += [nbformat.v4.new_code_cell('#| answer\n# Worked answer\nprint(41 + 1)',
                                           outputs=[nbformat.v4.new_output('stream', name='stdout', text='42\n')]),
                 nbformat.v4.new_markdown_cell('After the answer.')]
    nbs = tmp_path / 'nbs'; nbs.mkdir(); nbformat.write(nb, nbs / 'index.ipynb')
    text = make_book.build(nbs, tmp_path / 'out', log=lambda *a: None)[0].read_text(encoding='utf-8')
    folded = text[text.index('<details class="answer">'):text.index('</details>')]
    assert 'Worked answer' in folded and '42' in folded and '#| answer' not in text
    assert folded.count('<div') == folded.count('</div>'), 'the cell is folded whole'
    assert text.index('After the answer.') > text.index('</details>')


def test_no_raw_tex_outside_code(book):
    "Every formula became MathML: no page shows `$\\...` or a `$x_q$`-shaped span outside code."
    out, pages = book
    bad = {f.name: raw_tex(f.read_text(encoding='utf-8')) for f in pages}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f'raw TeX in {sorted(bad)}: {json.dumps(bad)[:1500]}'
    assert sum(f.read_text(encoding='utf-8').count('<math') for f in pages) >= 10, 'the lessons have formulas'


def test_raw_tex_checker_catches_a_raw_formula():
    "The check above can fail: raw TeX in prose is reported; TeX in code, a shell variable, and prices are not."
    assert raw_tex(r'<p>Eq. 2: $h_1 = \mathrm{restore}(q_1)$</p>')
    assert raw_tex('<p>views $x_q, x_k$ of one image</p>')
    assert raw_tex(r'<li>$$\omega_k = 1$$</li>')
    assert not raw_tex(r'<p>run <code>echo $HOME $\alpha$</code></p><pre>$x_q$</pre><div class="highlight"><pre>$\x$</pre></div>')
    assert not raw_tex('<p>it costs $5 or $10</p><p><math><mi>x</mi></math></p>')


def explorers_without_figure(text):
    "The widget notes on page `text` whose code cell shows no figure (the note alone, no static view)."
    cells = re.split(r'(?=<div class="cell )', text)
    return [c[c.index('class="widget-note"'):][:160] for c in cells if 'class="widget-note"' in c and '<img' not in c]


def _has_widget(f):
    nb = json.loads(f.read_text(encoding='utf-8'))
    return any(make_book.WIDGET in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))


def test_explorers_show_their_static_view(book):
    "Every page with an interactive explorer shows a figure in the explorer's cell, next to the note about the kernel."
    out, _ = book
    with_widgets = {f.stem for f in (ROOT / 'nbs').glob('*.ipynb') if _has_widget(f)}
    assert EXPLORERS <= with_widgets, f'no widget output found in {sorted(EXPLORERS - with_widgets)}'
    for stem in sorted(with_widgets):
        text = (out / f'{stem}.html').read_text(encoding='utf-8')
        assert 'class="widget-note"' in text, f'{stem}: the explorer has no note'
        bad = explorers_without_figure(text)
        assert not bad, f'{stem}: explorer without its static figure: {bad}'


PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=='


def _explorer_nb(saved_view=True, own_figure=False):
    "A lesson whose code cell displays an `interactive` (model 'w1': a slider and an Output widget)."
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell('# Mini'),
                nbformat.v4.new_code_cell('interact(f, a=0.5)', execution_count=1)]
    fig = nbformat.v4.new_output('display_data', data={'image/png': PNG, 'text/plain': '<Figure>'})
    view = {'model_id': 'w1', 'version_major': 2, 'version_minor': 0}
    widget = nbformat.v4.new_output('display_data', data={make_book.WIDGET: view, 'text/plain': 'interactive(...)'})
    nb.cells[1].outputs = ([fig] if own_figure else []) + [widget]
    if saved_view:
        state = {'w1': {'model_name': 'VBoxModel', 'state': {'children': ['IPY_MODEL_s1', 'IPY_MODEL_o1']}},
                 's1': {'model_name': 'FloatSliderModel', 'state': {'description': 'a', 'value': 0.5}},
                 'o1': {'model_name': 'OutputModel', 'state': {'outputs': [
                     {'output_type': 'display_data', 'metadata': {},
                      'data': {'image/png': PNG, 'text/plain': '<Figure>'}},
                     {'output_type': 'stream', 'name': 'stdout', 'text': 'a is 0.5\n'}]}}}
        nb.metadata['widgets'] = {make_book.WIDGET_STATE: {'state': state, 'version_major': 2, 'version_minor': 0}}
    return nb


def test_explorer_page_shows_saved_view_or_cell_figure(tmp_path):
    """The static view comes from the saved widget state (with the controls' values) or from the cell's own figure
    (execnb's run); with neither, only the note is left and `explorers_without_figure` reports it."""
    import nbformat
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    nbformat.write(_explorer_nb(), nbs / 'index.ipynb')
    nbformat.write(_explorer_nb(saved_view=False, own_figure=True), nbs / '01_own.ipynb')
    nbformat.write(_explorer_nb(saved_view=False), nbs / '02_none.ipynb')
    built = make_book.build(nbs, tmp_path / 'out', log=lambda *a: None)
    pages = {p.stem: p.read_text(encoding='utf-8') for p in built}
    assert not explorers_without_figure(pages['index'])
    assert '(a=0.5)' in pages['index'] and 'a is 0.5' in pages['index'] and pages['index'].count('<img') == 1
    assert not explorers_without_figure(pages['01_own']) and pages['01_own'].count('<img') == 1
    assert 'widget-view' not in pages['02_none'] and len(explorers_without_figure(pages['02_none'])) == 1


def _mini_nb(md, latex=None):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell('# Mini\n\n' + md)]
    if latex:
        c = nbformat.v4.new_code_cell('Math(...)', execution_count=1)
        c.outputs = [nbformat.v4.new_output('display_data', data={'text/latex': latex, 'text/plain': '<Math>'})]
        nb.cells.append(c)
    return nb


def test_formulas_become_mathml_and_code_stays_code(tmp_path):
    "Inline, display and `text/latex` formulas become MathML; TeX's `_` and `*` are not emphasis; `$` in code stays as written."
    import nbformat
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    md = ('Inline $a_1 + b_2 * c_3 + x_{*}$ and *real emphasis*, display\n\n$$\\frac{\\exp(z_q/\\tau)}{\\sum_j \\exp(z_j/\\tau)}$$\n\n'
          'Code `echo $HOME $x_q$` and\n\n```bash\nprice=$5; tex=$\\alpha_1$\n```\n')
    nbformat.write(_mini_nb(md, latex='$$\\lVert p - t\\rVert_2$$'), nbs / 'index.ipynb')
    page = make_book.build(nbs, tmp_path / 'out', log=lambda *a: None)[0].read_text(encoding='utf-8')
    assert page.count('<math') == 3, page
    assert page.count('display="block"') == 2                             # $$...$$ and the text/latex output
    assert '<mfrac>' in page and '<msub>' in page
    assert page.count('<em>') == 1, 'only *real emphasis* is emphasis: the TeX kept its _ and *'
    assert 'echo $HOME $x_q$</code>' in page                                # inline code untouched
    assert 'price=$5; tex=$\\alpha_1$' in html.unescape(re.sub(r'<[^>]+>', '', page))   # the fenced block too
    assert not raw_tex(page)


def test_a_formula_latex2mathml_cannot_convert_stops_the_build(tmp_path):
    "An unknown command would show as raw TeX: the build fails and names the lesson and the formula."
    import nbformat
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    nbformat.write(_mini_nb(r'See $\notacommand{x}$.'), nbs / '03_bad.ipynb')
    with pytest.raises(ValueError, match=r'03_bad\.ipynb.*notacommand'):
        make_book.build(nbs, tmp_path / 'out', log=lambda *a: None)


def _chromium():
    return shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')


FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-default-apps', '--disable-sync', '--no-first-run', '--hide-scrollbars', '--virtual-time-budget=5000']


@pytest.fixture(scope='module')
def chromium():
    exe = _chromium()
    if exe is None:
        if os.environ.get('CI'): pytest.fail('CI: chromium is not installed (.ci/run installs it with apt-get install -y chromium)')
        pytest.skip('chromium not installed (apt-get install -y chromium)')
    return exe


def _run(exe, *args, tmp):
    env = {**os.environ, 'HOME': str(tmp)}                          # a private profile; no crash-reporter prompts
    return subprocess.run([exe, *FLAGS, f'--user-data-dir={tmp / "profile"}', *args], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize('page', ['index', LESSON])
def test_chromium_renders_page_and_figures(book, chromium, page, tmp_path):
    "The page loads in headless Chromium, every figure decodes (data-figures = n/n, n > 0 for the lesson) and the TOC is there."
    out, _ = book
    r = _run(chromium, '--dump-dom', (out / f'{page}.html').as_uri(), tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'data-figures="(\d+)/(\d+)"', r.stdout)
    assert m, 'the page script did not run: ' + r.stdout[:300]
    ok, total = map(int, m.groups())
    assert ok == total, f'{page}: only {ok} of {total} figures decoded'
    if page == LESSON: assert total >= 2
    assert 'id="side"' in r.stdout and f'href="{LESSON}.html"' in r.stdout


def test_chromium_screenshot_is_not_blank(book, chromium, tmp_path):
    "A screenshot of the lesson has text and figures on it: many colours, and a good share of non-white pixels."
    from PIL import Image
    out, _ = book
    shot = tmp_path / 'lesson.png'
    r = _run(chromium, f'--screenshot={shot}', '--window-size=1280,2400', (out / f'{LESSON}.html').as_uri(), tmp=tmp_path)
    assert shot.exists(), r.stderr[-2000:]
    im = Image.open(shot).convert('RGB')
    colours = im.getcolors(maxcolors=1 << 20) or []
    non_white = sum(n for n, c in colours if sum(c) < 3 * 245) / (im.width * im.height)
    assert len(colours) > 500, f'only {len(colours)} colours: blank or text-only page'
    assert non_white > 0.05, f'{non_white:.1%} non-white pixels'


@pytest.mark.parametrize('page', ['07_contrastive', '09_cmae'])
def test_chromium_renders_formulas_as_mathml(book, chromium, page, tmp_path):
    """Chromium parses the lesson's formulas as MathML and lays them out: every <math> element is a MathMLElement with a
    size (data-math = n/n, n > 0), and each fraction's numerator sits above its denominator (data-fractions)."""
    out, _ = book
    r = _run(chromium, '--dump-dom', (out / f'{page}.html').as_uri(), tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '<math' in r.stdout, f'{page}: no MathML in the rendered page'
    m = re.search(r'data-math="(\d+)/(\d+)"', r.stdout)
    assert m, 'the page script did not run: ' + r.stdout[:300]
    ok, total = map(int, m.groups())
    assert total > 0 and ok == total, f'{page}: {ok} of {total} formulas laid out as MathML'
    assert total == r.stdout.count('<math'), 'the script counted every formula'
    ok, total = map(int, re.search(r'data-fractions="(\d+)/(\d+)"', r.stdout).groups())
    assert ok == total, f'{page}: {total - ok} fractions not stacked'
    if page == '07_contrastive': assert total >= 1, 'InfoNCE (Eq. 3) is a fraction'
