"""JupyterLab as a learner opens it: `jupyter lab` from the project's environment, lesson 01_patching opened in a real
(headless) Chromium, Run > Run All Cells from the menu, the mask-ratio explorer's slider dragged with the mouse, and the
figure under it redrawn. The kernel must report no error.

The server runs on 127.0.0.1 only, on a free port, with a token, in a temporary project (settings.ini and a copy of the
lesson: its last cell calls `nbdev_export()`, which finds the project by settings.ini, as it does for a learner who runs
`jupyter lab nbs/`) and with temporary Jupyter config/data/runtime/settings/workspace folders, so it never touches the
user's own. It is shut down on every path. Requests from the browser to anywhere but that server are refused.
Screenshots of the explorer before and after the slider moves are left in the test's tmp_path (and `failure.png` when a
step fails) for a person to look at.

Needs Chromium (Debian's /usr/bin/chromium) and the `playwright` Python package, driving that Chromium: no browser is
downloaded. Without them the test is skipped, except in CI (CI=true), where it fails."""
import json, os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from contextlib import contextmanager
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSON = '01_patching'
JUPYTER = Path(sys.executable).parent / 'jupyter'
BUDGET_S = 240                       # the whole test; every wait below is bounded by what is left of it


def _chromium():
    return shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')


def _missing(what):
    if os.environ.get('CI'): pytest.fail(f'CI: {what}')
    pytest.skip(what)


@pytest.fixture(scope='module')
def chromium():
    exe = _chromium()
    if exe is None: _missing('chromium is not installed (apt-get install -y chromium)')
    return exe


@pytest.fixture(scope='module')
def playwright():
    try: from playwright.sync_api import sync_playwright
    except ImportError: _missing('the playwright Python package is not installed (pip install -e ".[dev]")')
    return sync_playwright


class Deadline:
    def __init__(self, seconds): self.end = time.monotonic() + seconds
    def left(self, cap=None):
        "Seconds left (at least 1, at most `cap`)."
        s = max(1., self.end - time.monotonic())
        return min(s, cap) if cap else s
    def ms(self, cap=None): return self.left(cap) * 1000
    def passed(self): return time.monotonic() >= self.end


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _get(url, token, timeout=5, method='GET'):
    req = urllib.request.Request(url, method=method, headers={'Authorization': f'token {token}'})
    with urllib.request.urlopen(req, timeout=timeout) as r: return json.loads(r.read() or b'null')


@contextmanager
def jupyter_lab(tmp_path, deadline):
    "A JupyterLab server on 127.0.0.1 serving a temporary copy of the lesson; yields (base_url, token, notebook path)."
    proj = tmp_path / 'course'; nbs = proj / 'nbs'; nbs.mkdir(parents=True)
    shutil.copy(ROOT / 'settings.ini', proj)
    nb = Path(shutil.copy(ROOT / 'nbs' / f'{LESSON}.ipynb', nbs))
    jdir = tmp_path / 'jupyter'
    env = {k: v for k, v in os.environ.items() if not k.startswith(('JUPYTER', 'JPY_')) and k != 'MPLBACKEND'}
    env.update(JUPYTER_CONFIG_DIR=str(jdir / 'config'), JUPYTER_DATA_DIR=str(jdir / 'data'),
               JUPYTER_RUNTIME_DIR=str(jdir / 'runtime'), JUPYTERLAB_SETTINGS_DIR=str(jdir / 'lab-settings'),
               JUPYTERLAB_WORKSPACES_DIR=str(jdir / 'workspaces'), IPYTHONDIR=str(jdir / 'ipython'), PYTHONUNBUFFERED='1')
    # the learner has answered JupyterLab's "get notified about official Jupyter news?" with no (nothing fetched)
    notif = jdir / 'lab-settings' / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings'
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    token, port = secrets.token_hex(16), _free_port()
    base = f'http://127.0.0.1:{port}'
    log = (tmp_path / 'jupyter.log').open('w')
    proc = subprocess.Popen([str(JUPYTER), 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
                             '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}', f'--notebook-dir={nbs}',
                             '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', '--LabApp.news_url=',
                             '--LabApp.extension_manager=readonly',        # no PyPI look-ups from the server
                             *(['--allow-root'] if os.geteuid() == 0 else [])],   # CI runs as root
                            cwd=proj, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    def log_tail(): return (tmp_path / 'jupyter.log').read_text(errors='replace')[-3000:]
    try:
        while True:                                              # wait for the server to answer
            if proc.poll() is not None: pytest.fail(f'jupyter lab exited with {proc.returncode}:\n{log_tail()}')
            try: _get(f'{base}/api/status', token, timeout=2); break
            except OSError: pass
            if deadline.passed(): pytest.fail(f'jupyter lab did not answer on {base}:\n{log_tail()}')
            time.sleep(0.5)
        yield base, token, nb
    finally:
        try: _get(f'{base}/api/shutdown', token, timeout=5, method='POST')      # stops the kernels, then the server
        except Exception: proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try: proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=10)
        log.close()


# Every code cell's prompt ("[3]:", "[*]:", "[ ]:") and the text of every output that shows an error (a traceback).
CELLS_JS = """() => {
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
      .map(e => e.textContent.trim());
  const errors = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(e => e.textContent).filter(t => /Traceback|Error/.test(t)).map(t => t.slice(0, 1500));
  const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return {prompts, errors, status: status ? status.getAttribute('data-status') : null};
}"""


# The explorer's figure was redrawn (a new, decoded image), or its callback raised (then _wait_all_run reports it).
REDRAWN_JS = """([explorer, src]) => {
  if (explorer.querySelector('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) return true;
  const img = explorer.querySelector('.widget-output img');
  return !!img && img.getAttribute('src') !== src && img.complete && img.naturalWidth > 0;
}"""


def _kernel_states(base, token):
    return [k['execution_state'] for k in _get(f'{base}/api/kernels', token)]


def _until(page, cond, deadline, timeout, what):
    "Poll `cond` until true; waits with the page's own timer, so Playwright keeps serving the browser meanwhile."
    end = min(time.monotonic() + timeout, deadline.end)
    while not cond():
        if time.monotonic() > end: pytest.fail(what())
        page.wait_for_timeout(500)


def _wait_all_run(page, base, token, deadline, timeout):
    "Until every code cell has an execution count and the kernel is idle; fails at once on an error output."
    end = min(time.monotonic() + timeout, deadline.end)
    while True:
        s = page.evaluate(CELLS_JS)
        if s['errors']: pytest.fail('a cell raised:\n' + '\n----\n'.join(s['errors']))
        done = s['prompts'] and all(re.fullmatch(r'\[\d+\]:', p) for p in s['prompts'])
        states = _kernel_states(base, token)
        if 'dead' in states: pytest.fail(f'the kernel died: prompts {s["prompts"]}')
        if done and states == ['idle']: return s
        if time.monotonic() > end:
            pytest.fail(f'cells did not finish in time: prompts {s["prompts"]}, kernel {_kernel_states(base, token)}')
        page.wait_for_timeout(1000)


def _crop_diff(a, b, box):
    """Share of pixels that differ (by more than a little) between screenshots `a` and `b` inside `box` (x, y, w, h).
    The two crops are saved beside them as figure_before.png and figure_after.png."""
    from PIL import Image, ImageChops
    x, y, w, h = (int(round(v)) for v in box)
    ca, cb = (Image.open(f).convert('RGB').crop((x, y, x + w, y + h)) for f in (a, b))
    ca.save(Path(a).parent / 'figure_before.png'); cb.save(Path(b).parent / 'figure_after.png')
    diff = ImageChops.difference(ca, cb).convert('L').point(lambda v: 255 if v > 24 else 0)
    return sum(diff.histogram()[255:]) / (w * h)


def _union(b1, b2):
    x0, y0 = min(b1['x'], b2['x']), min(b1['y'], b2['y'])
    x1, y1 = max(b1['x'] + b1['width'], b2['x'] + b2['width']), max(b1['y'] + b1['height'], b2['y'] + b2['height'])
    return x0, y0, x1 - x0, y1 - y0


def test_widgets_extension_is_installed():
    "ipywidgets' JupyterLab extension (jupyterlab_widgets, which ipywidgets 8 depends on) is in the environment."
    ext = Path(sys.prefix) / 'share' / 'jupyter' / 'labextensions' / '@jupyter-widgets' / 'jupyterlab-manager'
    assert (ext / 'package.json').exists(), f'{ext} is missing: widgets would not render (pip install jupyterlab_widgets)'


def test_lesson_runs_in_jupyterlab_and_the_mask_ratio_slider_redraws(chromium, playwright, tmp_path):
    """Open the lesson, Run All Cells, drag the mask-ratio slider from 0.75 to 0, and check that the figure under it was
    redrawn (more than 10% of its pixels differ) and that no cell, nor the explorer's callback, raised."""
    deadline = Deadline(BUDGET_S)
    t0 = time.monotonic()
    before_png, after_png = tmp_path / 'explorer_before.png', tmp_path / 'explorer_after.png'
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    with jupyter_lab(tmp_path, deadline) as (base, token, nb_file), playwright() as pw:
        t_server = time.monotonic() - t0
        browser = pw.chromium.launch(executable_path=chromium, headless=True, timeout=deadline.ms(60),
                                     args=['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                                           '--disable-component-update', '--no-first-run'])
        page = None
        try:
            ctx = browser.new_context(viewport={'width': 1280, 'height': 1000})
            refused = []                                             # a regex, so local requests are not intercepted
            ctx.route(re.compile(r'^(?!' + re.escape(base) + r'/|data:|blob:)'),
                      lambda route: (refused.append(route.request.url), route.abort()))
            page = ctx.new_page()
            page.set_default_timeout(deadline.ms(90))
            page.goto(f'{base}/lab/tree/{LESSON}.ipynb?token={token}', timeout=deadline.ms(90))

            # the notebook is open, every cell shown, and its kernel started and idle
            n_code = sum(c['cell_type'] == 'code' for c in json.loads(nb_file.read_text(encoding='utf-8'))['cells'])
            _until(page, lambda: page.locator('.jp-NotebookPanel .jp-CodeCell').count() == n_code and
                   page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count() == 1 and
                   _kernel_states(base, token) == ['idle'], deadline, 120,
                   lambda: f'the notebook did not open with an idle kernel: '
                           f'{page.locator(".jp-NotebookPanel .jp-CodeCell").count()}/{n_code} code cells, '
                           f'kernels {_kernel_states(base, token)}')

            # Run > Run All Cells, from the menu bar as a learner does
            t1 = time.monotonic()
            page.locator('#jp-MainMenu .lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
            page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
            _wait_all_run(page, base, token, deadline, timeout=150)
            t_run = time.monotonic() - t1

            # the live explorer: interact(show_ratio, mask_ratio=FloatSlider(...), seed=IntSlider(...))
            explorer = page.locator('.widget-interact').filter(has=page.locator('.widget-label', has_text='mask_ratio'))
            explorer.wait_for(timeout=deadline.ms(60))
            slider = explorer.locator('.widget-slider').filter(has=page.locator('.widget-label', has_text='mask_ratio'))
            readout = slider.locator('.widget-readout')
            figure = explorer.locator('.widget-output img')
            figure.wait_for(timeout=deadline.ms(60))
            explorer.scroll_into_view_if_needed()
            assert readout.text_content().strip() == '0.75', readout.text_content()
            src_before, box_before = figure.get_attribute('src'), figure.bounding_box()
            page.screenshot(path=str(before_png))

            # drag the handle to the left end of its track: mask ratio 0, every patch visible
            handle, track = slider.locator('.noUi-handle'), slider.locator('.noUi-target')
            hb, tb = handle.bounding_box(), track.bounding_box()
            page.mouse.move(hb['x'] + hb['width'] / 2, hb['y'] + hb['height'] / 2)
            page.mouse.down()
            page.mouse.move(tb['x'] - 20, hb['y'] + hb['height'] / 2, steps=12)
            page.mouse.up()
            try: page.wait_for_function('r => r.textContent.trim() !== "0.75"', arg=readout.element_handle(),
                                        timeout=deadline.ms(30))
            except PlaywrightTimeout: pytest.fail('dragging the mask_ratio handle did not move the slider')
            try: page.wait_for_function(REDRAWN_JS, arg=[explorer.element_handle(), src_before], timeout=deadline.ms(60))
            except PlaywrightTimeout: pytest.fail(f'the figure was not redrawn after the slider moved to {readout.text_content()}')
            _wait_all_run(page, base, token, deadline, timeout=60)
            page.wait_for_timeout(500)                               # let the last redraw paint
            value = readout.text_content().strip()
            assert value == '0.00', f'the slider did not reach its left end: {value}'
            box_after = figure.bounding_box()
            page.screenshot(path=str(after_png))
            changed = _crop_diff(before_png, after_png, _union(box_before, box_after))

            # File > Save Notebook, then read the outputs as the kernel reported them
            mtime = nb_file.stat().st_mtime_ns
            page.locator('#jp-MainMenu .lm-MenuBar-itemLabel', has_text=re.compile(r'^File$')).click()
            page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Save Notebook$')).click()
            _until(page, lambda: nb_file.stat().st_mtime_ns != mtime, deadline, 30, lambda: 'the notebook was not saved')
            final = page.evaluate(CELLS_JS)
        except BaseException:                                        # pytest.fail too
            if page is not None:
                try: page.screenshot(path=str(tmp_path / 'failure.png'))
                except Exception: pass
            raise
        finally:
            browser.close()

    saved = json.loads(nb_file.read_text(encoding='utf-8'))
    errors = [(i, o.get('ename'), o.get('evalue')) for i, c in enumerate(saved['cells']) if c['cell_type'] == 'code'
              for o in c.get('outputs', []) if o.get('output_type') == 'error']
    assert not errors, f'cells raised: {errors}'
    code = [c for c in saved['cells'] if c['cell_type'] == 'code']
    assert all(isinstance(c.get('execution_count'), int) for c in code), 'every code cell ran'
    assert not final['errors'], final['errors']
    assert changed > 0.10, f'the figure changed in only {changed:.1%} of its pixels ({before_png}, {after_png})'
    print(f'\nJupyterLab: server {t_server:.0f}s, Run All {t_run:.0f}s, total {time.monotonic() - t0:.0f}s; '
          f'{changed:.0%} of the figure changed; screenshots {before_png} {after_png}; refused: {refused[:5]}')


def test_pixel_comparison_sees_a_redraw_and_only_a_redraw(tmp_path):
    "The figure check can fail: identical screenshots differ in 0% of the box, a repainted box in all of it."
    from PIL import Image
    a, b = tmp_path / 'a.png', tmp_path / 'b.png'
    im = Image.new('RGB', (200, 100), 'white'); im.paste((128, 128, 128), (20, 20, 80, 80)); im.save(a); im.save(b)
    assert _crop_diff(a, b, (10, 10, 100, 80)) == 0
    im.paste((70, 140, 60), (20, 20, 80, 80)); im.save(b)              # the masked patches now show the lawn
    assert _crop_diff(a, b, (20, 20, 60, 60)) == 1
    assert _crop_diff(a, b, (100, 0, 100, 100)) == 0                    # outside the figure nothing changed
    assert (tmp_path / 'figure_before.png').exists() and (tmp_path / 'figure_after.png').exists()


def readme_lab_command():
    "The README's command that opens the course in JupyterLab: its last part (the program and its arguments)."
    line = next(l for l in (ROOT / 'README.md').read_text().splitlines() if 'jupyter lab' in l and '&&' in l)
    return line.split('&&')[-1].split()


def test_readme_jupyterlab_command_serves_the_lessons(tmp_path):
    """The README's JupyterLab command, run as written from the repository root, starts a server within a timeout that
    lists every lesson under nbs/. Jupyter's config, data, runtime and workspace folders are temporary; the config only
    allows root (CI runs as root) and keeps a browser from being opened."""
    cmd = readme_lab_command()
    assert cmd[-2:] == ['lab', 'nbs/'] and Path(cmd[0]).name == 'jupyter', cmd
    cfg = tmp_path / 'config'; cfg.mkdir()
    (cfg / 'jupyter_server_config.json').write_text(json.dumps(dict(ServerApp=dict(allow_root=True, open_browser=False))))
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(cfg), 'JUPYTER_RUNTIME_DIR': str(tmp_path / 'runtime'),
           'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path / 'ws'), 'JUPYTERLAB_SETTINGS_DIR': str(tmp_path / 'settings')}
    log = open(tmp_path / 'server.log', 'w+')
    p = subprocess.Popen([str(JUPYTER), *cmd[1:]], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        url, end = None, time.monotonic() + 120
        while url is None and time.monotonic() < end and p.poll() is None:
            time.sleep(1)
            m = re.search(r'(http://(?:localhost|127\.0\.0\.1):\d+)/lab\?token=(\w+)', (tmp_path / 'server.log').read_text())
            if m: url = m.groups()
        assert url, 'no server within 120 s: ' + (tmp_path / 'server.log').read_text()[-2000:]
        base, token = url
        # `jupyter lab nbs/` serves nbs/ as the server's root: the lessons are at the top of the contents API
        with urllib.request.urlopen(f'{base}/api/contents?token={token}', timeout=30) as r:
            names = {c['name'] for c in json.loads(r.read())['content']}
        lessons = {f.name for f in (ROOT / 'nbs').glob('*.ipynb')}
        assert lessons <= names, sorted(lessons - names)
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try: p.wait(timeout=30)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL)
        log.close()
