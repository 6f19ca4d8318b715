#!/usr/bin/env python
"""Render the executed notebooks in nbs/ to an offline course book: one static HTML page per lesson.

    python tools/make_book.py [--out build/book] [--nbs nbs]

Each page has the course's table of contents (every lesson, the current one marked), the lesson's own sections, and
previous/next links. Figures are the notebooks' committed outputs, embedded as data: URIs; CSS and the one small script
are inline, so a page fetches nothing from the network (no CDN, no MathJax). Formulas (`$...$`, `$$...$$`, LaTeX
environments) are converted to MathML when the book is built, by `latex2mathml`, and browsers render MathML themselves.
nbconvert's markdown parser finds them, so a `$` in code is left alone and the markdown rules never see the TeX (no `_` or
`*` turned into emphasis). A formula that cannot be converted stops the build. Cells marked
`#| hide` (export calls) are left out and `#|` directives are stripped, as nbdev's own site does. An exercise's
worked answer (a code cell marked `#| answer`) is shown folded, in a `<details>` element the reader opens.
Links between lessons (`12_eval.ipynb`) point to the rendered pages (`12_eval.html`). Widgets need a live
kernel, so a widget output is replaced by a note saying so, followed by the explorer's static view at the settings it
was saved with: the outputs of its `Output` widget in the notebook's saved widget state (JupyterLab and nbclient save
it), or the figure that execnb (`nbdev_test`, tools/run_notebook.py) writes into the cell itself. Quarto (which
`nbdev_docs` needs) cannot be installed offline; nbconvert ships with JupyterLab.
"""
import argparse, copy, html, re, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDGET = 'application/vnd.jupyter.widget-view+json'
WIDGET_STATE = 'application/vnd.jupyter.widget-state+json'
IMAGES = ('image/png', 'image/jpeg', 'image/svg+xml')

CSS = """
body{margin:0;font:16px/1.55 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d1d1f;background:#fff}
#side{position:fixed;top:0;left:0;bottom:0;width:250px;overflow:auto;background:#f5f6f8;border-right:1px solid #ddd;padding:16px 12px;box-sizing:border-box;font-size:14px}
#side h2{font-size:15px;margin:0 0 10px}#side a{display:block;padding:3px 6px;border-radius:4px;color:#234;text-decoration:none}
#side a:hover{background:#e4e8ee}#side a.here{background:#2b5cad;color:#fff}
#side .sections{margin:4px 0 8px 10px;border-left:2px solid #c8d2e0}#side .sections a{font-size:13px;padding:2px 8px;color:#456}
main{margin-left:250px;padding:24px 40px 60px;max-width:980px}
h1{font-size:30px;margin-top:0}h2{border-bottom:1px solid #e3e3e3;padding-bottom:4px;margin-top:34px}
a.anchor-link{display:none}
pre{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:6px;padding:8px 10px;overflow:auto;font-size:13px;line-height:1.4}
code{font-size:13.5px;background:#f2f3f5;padding:1px 4px;border-radius:3px}pre code{background:none;padding:0}
.jp-OutputArea-output pre,.output pre{background:#fff;border:none;border-left:3px solid #c9d6ea;border-radius:0;margin:4px 0}
.jp-RenderedImage img,.output img,main img{max-width:100%;height:auto}
details.answer{border:1px solid #d5d9de;border-radius:6px;padding:4px 10px;margin:8px 0}details.answer summary{cursor:pointer;color:#2b5cad}
table{border-collapse:collapse;margin:10px 0;font-size:14px}td,th{border:1px solid #d5d9de;padding:4px 8px}th{background:#f0f2f5}
blockquote{margin:0;padding:2px 14px;color:#444;border-left:4px solid #8aa4d6;background:#f6f8fc}
.widget-note{color:#7a5a00;background:#fff8e1;border:1px solid #f0d890;padding:6px 10px;border-radius:4px;font-size:14px}
nav.pn{display:flex;justify-content:space-between;margin-top:40px;padding-top:12px;border-top:1px solid #ddd}
.jp-InputPrompt,.jp-OutputPrompt,.prompt{display:none}
math{font-size:1.1em}math[display=block]{margin:.5em 0}
"""

# Marks the page once every figure has decoded: <body data-figures="loaded/total">, and how many formulas the browser
# laid out as MathML (a MathMLElement with a size; a fraction's numerator above its denominator): data-math="ok/total".
# The browser test reads both.
SCRIPT = """window.addEventListener('load',function(){var im=document.querySelectorAll('main img'),ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++}
document.body.setAttribute('data-figures',ok+'/'+im.length);
var ms=document.querySelectorAll('main math'),mok=0;
for(var j=0;j<ms.length;j++){var r=ms[j].getBoundingClientRect();
if(window.MathMLElement&&ms[j] instanceof MathMLElement&&r.width>0&&r.height>0)mok++}
var fr=document.querySelectorAll('main mfrac'),fok=0;
for(var k=0;k<fr.length;k++){var a=fr[k].children[0],b=fr[k].children[1];
if(a&&b&&a.getBoundingClientRect().bottom<=b.getBoundingClientRect().top+1)fok++}
document.body.setAttribute('data-math',mok+'/'+ms.length);document.body.setAttribute('data-fractions',fok+'/'+fr.length)});"""


def tex_to_mathml(tex, display='inline'):
    "MathML for the TeX formula `tex` (without its `$` delimiters); ValueError if latex2mathml cannot convert it."
    try: from latex2mathml.converter import convert
    except ImportError as e: raise ImportError('make_book needs latex2mathml: .venv/bin/pip install -e ".[dev]"') from e
    try: out = convert(tex.strip(), display=display)
    except Exception as e: raise ValueError(f'cannot convert the formula ${tex}$ to MathML: {type(e).__name__} {e}') from e
    if '\\' in out: raise ValueError(f'the formula ${tex}$ has a command latex2mathml does not know: {out[:300]}')
    return out


def exporter():
    "nbconvert's HTMLExporter (basic template), its markdown renderer writing formulas as MathML."
    from jinja2 import pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
    from nbconvert.preprocessors import TagRemovePreprocessor

    class MathMLRenderer(IPythonRenderer):
        def inline_math(self, body): return tex_to_mathml(body, 'inline')
        def block_math(self, body): return tex_to_mathml(body, 'block')
        def latex_environment(self, name, body): return tex_to_mathml(f'\\begin{{{name}}}{body}\\end{{{name}}}', 'block')

    class BookExporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context, source):     # as HTMLExporter.markdown2html, with the renderer above
            cell = context.get('cell', {})
            renderer = MathMLRenderer(escape=False, attachments=cell.get('attachments', {}), embed_images=self.embed_images,
                                      path=context.get('resources', {}).get('metadata', {}).get('path', ''),
                                      anchor_link_text=self.anchor_link_text, exclude_anchor_links=self.exclude_anchor_links,
                                      **self.lexer_options)
            return MarkdownWithMath(renderer=renderer).render(source)

    exp = BookExporter(template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True, anchor_link_text='')
    exp.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'remove_input'}), enabled=True)
    return exp


def latex_output(o):
    "A `text/latex` output that is one formula (IPython's `Math`, sympy) gets a `text/html` MathML version, which wins."
    tex = o.get('data', {}).get('text/latex')
    if tex is None or 'text/html' in o['data']: return o
    m = re.fullmatch(r'\s*(\$\$?)([^$]+)\1\s*', ''.join(tex))
    if not m: return o
    o = copy.deepcopy(o)
    o['data']['text/html'] = tex_to_mathml(m.group(2), 'block' if m.group(1) == '$$' else 'inline')
    return o


def directives(src):
    return {l[3:].strip().split(':')[0].split()[0] for l in src.splitlines() if l.startswith('#|') and l[3:].strip()}


def title_of(nb, fallback):
    for c in nb['cells']:
        if c['cell_type'] == 'markdown':
            m = re.search(r'^#\s+(.+)$', ''.join(c['source']), re.M)
            if m: return re.sub(r'[`*]', '', m.group(1)).strip()
    return fallback


def ipynb_links(text):
    "`12_eval.ipynb` and `12_eval.ipynb#sec` link targets -> `.html` (relative links only)."
    return re.sub(r'(\]\(|href=")(?!https?:)([\w./-]+?)\.ipynb(?=[#)"])', r'\1\2.html', text)


def _models(nb):
    "model_id -> model of the notebook's saved widget state ({} if none was saved)."
    state = nb.get('metadata', {}).get('widgets', {}).get(WIDGET_STATE) or {}
    return state.get('state') or {}


def widget_view(models, model_id):
    """(outputs, settings) that a saved widget shows without a kernel: the outputs of the `Output`
    widgets inside it (an `interactive` keeps its function's figure and prints there), and its
    controls' values as 'name=value' strings."""
    outs, settings, seen = [], [], set()
    def walk(mid):
        m = models.get(mid)
        if m is None or mid in seen: return
        seen.add(mid)
        st = m.get('state', {})
        if m.get('model_name') == 'OutputModel': outs.extend(st.get('outputs', []))
        elif st.get('description'):
            if st.get('index') is not None and st.get('_options_labels'):
                settings.append(f"{st['description']}={st['_options_labels'][st['index']]}")
            elif 'value' in st and not isinstance(st['value'], (dict, list)):
                settings.append(f"{st['description']}={st['value']}")
        for ch in st.get('children', []):
            if isinstance(ch, str) and ch.startswith('IPY_MODEL_'): walk(ch[len('IPY_MODEL_'):])
    walk(model_id)
    return outs, settings


def has_image(outputs): return any(k in o.get('data', {}) for o in outputs for k in IMAGES)


def widget_note(text):
    from nbformat import from_dict
    return from_dict({'output_type': 'display_data', 'metadata': {},
                      'data': {'text/html': f'<div class="widget-note">{html.escape(text)}</div>'}})


def widget_outputs(outputs, models):
    """The outputs of a code cell that displays a widget, as the page shows them: a note in place
    of each widget, then the widget's saved view (`widget_view`), unless the cell's own outputs
    already hold its figure (execnb writes an `interactive`'s first figure into the cell)."""
    from nbformat import from_dict
    out = []
    own_figure = has_image([o for o in outputs if WIDGET not in o.get('data', {})])
    for o in outputs:
        if WIDGET not in o.get('data', {}): out.append(latex_output(o)); continue
        view, settings = widget_view(models, o['data'][WIDGET].get('model_id'))
        if own_figure or not has_image(view):
            out.append(widget_note('Interactive widget: open this lesson in JupyterLab to use it.'
                                   + (' The figure above is its view at the default settings.'
                                      if own_figure else '')))
            continue
        at = f" ({', '.join(settings)})" if settings else ''
        out.append(widget_note(f'Interactive explorer: below, its view as saved{at}. Open this '
                               'lesson in JupyterLab to change the settings.'))
        out.extend(latex_output(from_dict(copy.deepcopy(v))) for v in view
                   if v.get('output_type') in ('display_data', 'execute_result', 'stream'))
    return out


def prepare(nb):
    "Notebook `nb` as the page shows it: hidden cells dropped, directives stripped, widgets as static views."
    nb = copy.deepcopy(nb)
    cells = []
    for c in nb['cells']:
        src = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        if c['cell_type'] == 'code':
            d = directives(src)
            if d & {'hide', 'default_exp', 'exporti'} or 'include' in d and 'include: false' in src: continue
            echo = not any(l.startswith('#|') and l[2:].replace(' ', '') == 'echo:false' for l in src.splitlines())
            src = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
            if not src: continue
            if not echo: c.metadata.setdefault('tags', []).append('remove_input')     # nbdev's `#| echo: false`
            if 'answer' in d: c.metadata.setdefault('tags', []).append('answer')       # folded by fold_answers
            outs = c.get('outputs', [])
            widget = any(WIDGET in o.get('data', {}) for o in outs)
            c['outputs'] = widget_outputs(outs, _models(nb)) if widget else [latex_output(o) for o in outs]
        elif c['cell_type'] == 'markdown': src = ipynb_links(src)
        else: continue
        c['source'] = src
        cells.append(c)
    nb['cells'] = cells
    return nb


def fold_answers(body):
    "Wrap each cell nbconvert marked `celltag_answer` (a worked answer) in a closed `<details>` element."
    out, pos = [], 0
    for m in re.finditer(r'<div class="[^"]*\bcelltag_answer\b[^"]*"[^>]*>', body):
        if m.start() < pos: continue
        depth, end = 0, m.start()
        for t in re.finditer(r'<div\b|</div>', body[m.start():]):
            depth += 1 if t.group() != '</div>' else -1
            if depth == 0: end = m.start() + t.end(); break
        out += [body[pos:m.start()], '<details class="answer"><summary>Worked answer (try your own first)</summary>\n',
                body[m.start():end], '\n</details>']
        pos = end
    return ''.join(out) + body[pos:]


def sections(body):
    "(id, text) of the h2 headings nbconvert wrote (it gives every heading an id)."
    return [(m.group(1), html.unescape(re.sub(r'<[^>]+>', '', m.group(2))).replace('¶', '').strip())
            for m in re.finditer(r'<h2 id="([^"]+)"[^>]*>(.*?)</h2>', body, re.S)]


def page(title, body, toc, here, prev, nxt):
    side = ['<h2>cmae_course</h2>']
    for name, t in toc:
        cls = ' class="here"' if name == here else ''
        side.append(f'<a href="{name}.html"{cls}>{html.escape(t)}</a>')
        if name == here:
            secs = ''.join(f'<a href="#{i}">{html.escape(s)}</a>' for i, s in sections(body))
            if secs: side.append(f'<div class="sections">{secs}</div>')
    pn = (f'<a href="{prev[0]}.html">&larr; {html.escape(prev[1])}</a>' if prev else '<span></span>') + \
         (f'<a href="{nxt[0]}.html">{html.escape(nxt[1])} &rarr;</a>' if nxt else '<span></span>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(title)}</title>'
            f'<style>{CSS}{PYGMENTS_CSS}</style></head>\n<body><nav id="side">{"".join(side)}</nav>\n<main>{body}'
            f'<nav class="pn">{pn}</nav></main><script>{SCRIPT}</script></body></html>\n')


def build(nbs=ROOT / 'nbs', out=ROOT / 'build' / 'book', log=print):
    "Render every notebook of `nbs` (index first) into `out`; returns the list of pages written."
    global PYGMENTS_CSS
    from pygments.formatters import HtmlFormatter
    import nbformat
    PYGMENTS_CSS = HtmlFormatter(style='friendly').get_style_defs('.highlight')
    nbs, out = Path(nbs), Path(out)
    files = sorted(p for p in nbs.glob('*.ipynb') if not p.name.startswith('_'))
    files.sort(key=lambda p: (p.stem != 'index', p.stem))
    if not files: raise FileNotFoundError(f'{nbs}: no notebooks to render')
    nbs_json = {p.stem: nbformat.read(p, as_version=4) for p in files}     # multi-line strings joined, as nbconvert expects
    toc = [(s, 'Home' if s == 'index' else f'{s.split("_")[0]} {title_of(nb, s)}') for s, nb in nbs_json.items()]
    exp = exporter()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (stem, nb) in enumerate(nbs_json.items()):
        t0 = time.perf_counter()
        try: body, _ = exp.from_notebook_node(prepare(nb))
        except ValueError as e: raise ValueError(f'{stem}.ipynb: {e}') from e
        body = fold_answers(ipynb_links(body))
        f = out / f'{stem}.html'
        f.write_text(page(title_of(nb, stem), body, toc, stem, toc[i - 1] if i else None,
                          toc[i + 1] if i + 1 < len(toc) else None), encoding='utf-8')
        written.append(f)
        log(f'{f.name:28s} {f.stat().st_size / 1024:7.0f} KB  {time.perf_counter() - t0:.1f} s')
    return written


PYGMENTS_CSS = ''

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT / 'build' / 'book'), help='folder for the HTML pages (default build/book)')
    ap.add_argument('--nbs', default=str(ROOT / 'nbs'), help='notebook folder (default nbs)')
    a = ap.parse_args()
    try: pages = build(a.nbs, a.out)
    except (FileNotFoundError, ValueError) as e: sys.exit(f'make_book: error: {e}')
    print(f'{len(pages)} pages in {a.out}; open {Path(a.out) / "index.html"}')
