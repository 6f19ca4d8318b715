#!/usr/bin/env python
"""Mean IoU of ContrastiveCrop boxes against the true boxes, for every heatmap source and threshold, for trained encoders.

    python tools/ccrop_table.py NAME=RUN_FOLDER [NAME=RUN_FOLDER ...] [--out results/ccrop_table.json] [--every 5] [--data FOLDER]

Each RUN_FOLDER is a `cmae_pretrain` output folder (its `encoder.pt` is loaded, untrained runs included: `--epochs 0`). Boxes are
computed on the embedded dataset's training images (or those of `--data`, which must have true boxes), every `--every`-th one,
un-augmented, at the run's image size, the way the box refresh of `cmae_pretrain` computes them. The `posfree` map is also measured
with 0 to 32 position directions taken out (`posfree_pre_norm_by_rank`). The last two rows need no encoder:
the median and position-free maps computed on the raw pixel patches, the floor a ViT heatmap has to beat to be worth its forward
pass. Lesson 06a reads the JSON this writes.
"""
import argparse, json, shlex, sys, time
from pathlib import Path

SOURCES = ('features:sum:post_norm', 'features:l2:post_norm', 'features:sum:pre_norm', 'features:l2:pre_norm',
           'features:median:post_norm', 'features:median:pre_norm', 'features:posfree:post_norm', 'features:posfree:pre_norm',
           'attention')
KS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
RANKS = (0, 2, 4, 8, 16, 32)     # how many position directions 'posfree' takes out (0: the position means only)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('runs', nargs='+', help='NAME=RUN_FOLDER')
    ap.add_argument('--out', default='results/ccrop_table.json')
    ap.add_argument('--every', type=int, default=5)
    ap.add_argument('--data', default=None, help='dataset folder (default: the embedded dataset)')
    a = ap.parse_args()
    runs = []
    for spec in a.runs:                      # check every folder before the slow part, so bad input writes nothing
        name, eq, folder = spec.partition('=')
        if not eq or not name: ap.error(f"{spec!r}: expected NAME=RUN_FOLDER")
        if not (Path(folder) / 'encoder.pt').is_file(): ap.error(f"{spec!r}: {folder}/encoder.pt does not exist")
        runs.append((name, folder))
    if not Path(a.out).resolve().parent.is_dir(): ap.error(f"--out {a.out}: its folder does not exist")
    if a.every < 1: ap.error(f"--every {a.every}: must be >= 1")
    if a.data is not None and not (Path(a.data) / 'train').is_dir(): ap.error(f"--data {a.data}: no train/ folder there")
    import torch
    from cmae_course.data import default_dataset
    from cmae_course.readers import load_split
    from cmae_course.views import ViewDataset
    from cmae_course.evaluate import load_encoder
    from cmae_course.ccrop import box_iou_table, pixel_iou_row, dataset_boxes, mean_iou
    path = Path(a.data) if a.data is not None else default_dataset()
    train = load_split(path, 'train', 64)
    train = train.subset(torch.arange(0, len(train), a.every))
    if torch.isnan(train.true_boxes).all(): ap.error(f"--data {path}: its training images have no true boxes")
    res = dict(command='python tools/ccrop_table.py ' + shlex.join(sys.argv[1:]), data=str(path), n_images=len(train), tables={})
    pixel_rows = {}
    for name, folder in runs:
        enc, cfg = load_encoder(Path(folder) / 'encoder.pt')
        ds = ViewDataset(train, 'eval', enc.patch_embed.img_size[0])
        t0 = time.time()
        tab = box_iou_table(enc, ds, sources=SOURCES, ks=KS)
        geometry = (enc.patch_embed.img_size[0], enc.patch_embed.patch_size)   # the pixel row needs no encoder: once per geometry
        if geometry not in pixel_rows:
            pixel_rows[geometry] = {f'pixels:{r}': pixel_iou_row(ds, geometry[1], KS, reduce=r) for r in ('median', 'posfree')}
        for row, vals in pixel_rows[geometry].items(): tab.loc[row] = vals
        src = 'features:posfree:pre_norm'
        by_rank = {r: dataset_boxes(enc, ds, sources=(src,), ks=KS, rank=r) for r in RANKS}
        ranks = {str(r): [round(mean_iou(b[(src, k)], ds.true_boxes), 4) for k in KS] for r, b in by_rank.items()}
        res['tables'][name] = dict(folder=folder, rows={r: [round(float(v), 4) for v in tab.loc[r]] for r in tab.index},
                                   posfree_pre_norm_by_rank=ranks, ks=list(KS), seconds=round(time.time() - t0, 1))
        print(name); print(tab.round(3).to_string())
        print(f'{src} by rank (directions taken out):', {r: v[KS.index(0.5)] for r, v in ranks.items()}, 'at k=0.5')
    Path(a.out).write_text(json.dumps(res, indent=1))
    print('written to', a.out)


if __name__ == '__main__':
    main()
