#!/usr/bin/env python
"""A budget curve: MAE and CMAE pretrained for 0, 1, 2, 4 and 8 times the workshop budget on one folder, each run
evaluated as the main comparison is (converged linear probe, kNN, few-label fine-tuning).

    python tools/budget_curve.py --data data/glyphs-bold --multiples 0,1,2,4,8 --seeds 0 --out runs/letters-budget \\
        --json results/letters_budget.json [--rows MAE,CMAE] [--rows-at 4=MAE] [--pretrain-args '--precision fp32']

The workshop budget is the `tiny` preset's 10 epochs (the main job's); multiple m trains for 10 x m epochs with the same
warm-up and cosine schedule stretched over them. Multiple 0 is the untrained encoder (row 'ViT, untrained'). Each
multiple is one `cmae_experiments --main` command with its own `--out` folder (printed, and kept in the JSON), so a
finished run is reused when the tool is run again: two invocations with `--rows MAE` and `--rows CMAE` can train side
by side, and a third with both rows only gathers them. `--rows-at M=ROWS` (repeatable) trains other rows at multiple M, for a
curve that goes further for one method than for the other. The JSON holds every command and every run's summary.
"""
import argparse, json, os, shlex, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_EPOCHS = 10


def commands(data, multiples, seeds, out, rows, pretrain_args, rows_at=None):
    "(multiple, cmae_experiments argv) for each multiple; `rows_at` maps a multiple to its own rows"
    seeds = ','.join(str(s) for s in seeds)
    for m in multiples:
        argv = ['cmae_experiments', '--main', '--data', data, '--seeds', seeds, '--no-baselines']
        here = (rows_at or {}).get(m, rows)
        argv += ['--rows', 'ViT, untrained'] if m == 0 else ['--rows', ','.join(here), '--epochs', str(BASE_EPOCHS * m)]
        if pretrain_args: argv += ['--pretrain-args', pretrain_args]
        yield m, argv + ['--out', f'{out}/x{m}']


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', required=True)
    ap.add_argument('--multiples', default='0,1,2,4,8')
    ap.add_argument('--seeds', default='0')
    ap.add_argument('--rows', default='MAE,CMAE')
    ap.add_argument('--out', default='runs/budget')
    ap.add_argument('--rows-at', action='append', default=[], help='M=ROWS: the rows trained at multiple M')
    ap.add_argument('--json', default=None, help='write the gathered curve here')
    ap.add_argument('--pretrain-args', default='--precision fp32')
    a = ap.parse_args(argv)
    try:
        multiples = [int(m) for m in a.multiples.split(',')]
        seeds = [int(s) for s in a.seeds.split(',')]
    except ValueError:
        sys.exit(f"budget_curve: error: --multiples {a.multiples!r} and --seeds {a.seeds!r} must be comma-separated integers")
    try: rows_at = {int(k): [r for r in v.split(',') if r.strip()] for k, v in (x.split('=', 1) for x in a.rows_at)}
    except ValueError: sys.exit(f"budget_curve: error: --rows-at {a.rows_at!r}: expected M=ROWS, e.g. 4=MAE")
    if any(m < 0 for m in multiples): sys.exit(f"budget_curve: error: --multiples {a.multiples!r}: a multiple is >= 0")
    if not Path(a.data).is_dir(): sys.exit(f"budget_curve: error: --data {a.data}: no such folder")
    rows = [r.strip() for r in a.rows.split(',') if r.strip()]
    exe = Path(sys.executable).parent / 'cmae_experiments'
    curve, t0 = [], time.perf_counter()
    for m, cmd in commands(a.data, multiples, seeds, a.out, rows, a.pretrain_args, rows_at):
        print('$ ' + shlex.join(cmd), flush=True)
        r = subprocess.run([str(exe), *cmd[1:]], env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
        if r.returncode: sys.exit(f"budget_curve: error: {shlex.join(cmd)} failed (exit {r.returncode})")
        res = json.loads((Path(a.out) / f'x{m}' / 'results.json').read_text())
        curve.append(dict(multiple=m, epochs=BASE_EPOCHS * m, command=shlex.join(cmd), runs=res['runs']))
    if a.json:
        out = dict(command=shlex.join(['python', 'tools/budget_curve.py', *(argv if argv is not None else sys.argv[1:])]),
                   base_epochs=BASE_EPOCHS, data=a.data, seeds=seeds, seconds=round(time.perf_counter() - t0, 1),
                   curve=curve)
        Path(a.json).write_text(json.dumps(out, indent=1))
        print(f"written to {a.json}")


if __name__ == '__main__':
    main()
