#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb (Quarto, which `nbdev_readme` needs, cannot be installed offline).

    python tools/make_readme.py          # rewrite README.md
    python tools/make_readme.py --check  # exit 1 if README.md is stale

Markdown cells are copied as they are; code cells that are not hidden (`#| hide`) are shown as Python blocks
without their `#|` directives (only the outputs for `#| echo: false`), followed by their text outputs; a markdown output (`IPython.display.Markdown`) is copied as
markdown. Images in outputs are not copied.
"""
import argparse, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = '<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n'


def _src(cell):
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


def _directives(src):
    return {l[3:].strip().split()[0] for l in src.splitlines() if l.startswith('#|') and l[3:].strip()}


def _echo_false(src):
    "nbdev's `#| echo: false`: show the cell's output, not its code."
    return any(l.startswith('#|') and l[2:].replace(' ', '') == 'echo:false' for l in src.splitlines())


def render(nb_path):
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    parts = []
    for cell in nb['cells']:
        src = _src(cell)
        if cell['cell_type'] == 'markdown':
            parts.append(src.strip())
        elif cell['cell_type'] == 'code':
            if _directives(src) & {'hide', 'export', 'exporti', 'default_exp'}: continue
            code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
            if not code: continue
            if not _echo_false(src): parts.append(f'```python\n{code}\n```')
            for out in cell.get('outputs', []):
                md = out.get('data', {}).get('text/markdown')
                if md:                                   # e.g. IPython.display.Markdown(table): copied as markdown
                    parts.append((''.join(md) if isinstance(md, list) else md).strip()); continue
                text = out.get('text') or out.get('data', {}).get('text/plain')
                if text:
                    text = ''.join(text) if isinstance(text, list) else text
                    parts.append(f'```\n{text.rstrip()}\n```')
    return HEADER + '\n\n'.join(p for p in parts if p) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='only check that README.md is up to date')
    ap.add_argument('--nb', default=str(ROOT / 'nbs' / 'index.ipynb'))
    ap.add_argument('--out', default=str(ROOT / 'README.md'))
    a = ap.parse_args()
    text, out = render(a.nb), Path(a.out)
    if a.check:
        if not out.exists() or out.read_text(encoding='utf-8') != text:
            print(f'{out.name} is stale: it differs from what {Path(a.nb).name} renders to; run `python tools/make_readme.py`')
            sys.exit(1)
        print(f'{out.name} is in sync with {Path(a.nb).name}')
    else:
        out.write_text(text, encoding='utf-8')
        print(f'wrote {out}')


if __name__ == '__main__':
    main()
