"""Why did CMAE's location task stay near chance in the default run on unlit images? Train it ALONE, at the default run's
budget, under inputs that differ in one thing at a time, and write the accuracy each reaches. The images are the unlit
embedded ones (`make_default_dataset()`, the commands' dataset before the lit one, `default_dataset()`, replaced it because
of what this tool found); the 'light' conditions add the light here.

    python tools/location_causes.py          # writes results/location_causes.json

Every condition trains the default run's encoder (vit_tiny, 4 blocks, 32 px images, 4 px patches: 64 positions) and the
location head from scratch on the embedded training images, with nothing but the DropPos location loss (75% of the 16
visible tokens lose their PE and are scored), at the default run's budget and optimiser: 780 steps of 64 images, AdamW
lr 3.75e-4 (blr 1.5e-3 x 64/256), wd 0.05, a 78-step warmup, then cosine. Reported: accuracy (the arg-max is the right
one of 64 positions; chance 1/64) and "near" (off by at most one patch in each direction), each the mean of the last
50 steps. Conditions run two at a time, one thread each (about 10 minutes on 2 cores for the default list)."""
import argparse, json, math, os, time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

CONDITIONS = {
    'plain':                 dict(views='plain'),
    'crops':                 dict(views='mae'),
    'CMAE views':            dict(views='cmae'),
    'plain + mask 0.5':      dict(views='plain', mask_ratio=0.5),
    'plain + lighting':      dict(views='plain', light=0.5),
    'CMAE views + lighting': dict(views='cmae', light=0.5),
}
DESCRIBE = {
    'plain': 'the full image, resized to 32 px, flipped half the time',
    'crops': "MAE's view: RandomResizedCrop(0.2-1) + flip",
    'CMAE views': "CMAE's online view: crop + flip + colour jitter + grayscale (what the default run scores)",
    'plain + mask 0.5': 'as plain, 32 visible tokens instead of 16',
    'plain + lighting': 'as plain, with light from above and a vignette multiplied into every image',
    'CMAE views + lighting': "as CMAE views, on the lit images",
}


def lighting(images, strength=0.5):
    """A position cue photographs have and the embedded images do not: brighter above and in the middle, darker below
    and in the corners. `images` uint8 (N, 3, S, S) -> uint8, each pixel times 1 + strength*(1/2 - y/2 - r^2/2), with
    x, y in [-1, 1] (y down) and r^2 = x^2 + y^2: 1.25 at the top centre, 0.75 at the bottom centre, 0.5 in the lower
    corners. The same field as the generator's `light` option (`cmae_course.data.light_field`), applied here to the
    decoded images."""
    import torch
    S = images.shape[-1]
    y = torch.linspace(-1, 1, S)[:, None].expand(S, S)
    x = y.T
    gain = 1 + strength * (0.5 - 0.5 * y - 0.5 * (x * x + y * y))
    return (images.float() * gain).round().clamp(0, 255).to(torch.uint8)


def train(name, steps=780, bs=64, lr=3.75e-4, warmup=78, seed=0, data=None):
    "Train the location task alone under condition `name` -> dict(acc, near, loss, seconds)."
    import torch, torch.nn as nn
    torch.set_num_threads(1)
    from cmae_course.readers import load_split
    from cmae_course.views import ViewDataset
    from cmae_course.vit import ViT
    from cmae_course.location import LocationHead, embed_visible, location_loss, location_accuracy
    c = CONDITIONS[name]
    from cmae_course.data import make_default_dataset
    ims = load_split(make_default_dataset() if data is None else data, 'train', size=64)   # unlit
    if c.get('light'): ims = replace(ims, images=lighting(ims.images, c['light']))
    plain = c['views'] == 'plain'   # the whole image: a 'mae' view whose only crop is the full square
    views = ViewDataset(ims, 'mae' if plain else c['views'], 32, scale=(1., 1.) if plain else (0.2, 1.),
                        ratio=(1., 1.) if plain else (3 / 4, 4 / 3))
    torch.manual_seed(seed); g = torch.Generator().manual_seed(seed)
    enc = ViT(img_size=32, patch_size=4, embed_dim=192, depth=4, num_heads=3)
    head, token = LocationHead(192, enc.num_patches), nn.Parameter(torch.randn(1, 1, 192) * .02)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters(), token], lr=lr, weight_decay=0.05)
    side = enc.grid_size[1]
    hist, t0 = [], time.time()
    for s in range(steps):
        for pg in opt.param_groups:
            pg['lr'] = lr * (s + 1) / warmup if s < warmup else lr * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))
        x = views.get_batch(torch.randint(0, len(ims), (bs,), generator=g), generator=g)[0]
        ev = embed_visible(enc, x, c.get('mask_ratio', 0.75), mask_pos_token=token, pos_mask_ratio=0.75)
        logits = head(enc.forward_tokens(ev['x_vis'])[:, 1:])
        w, t = ev['pos_drop'], ev['ids_keep']
        loss = location_loss(logits, t, w)
        opt.zero_grad(); loss.backward(); opt.step()
        p = logits.argmax(-1)
        near = (((p // side - t // side).abs() <= 1) & ((p % side - t % side).abs() <= 1)).float()
        hist.append((loss.item(), location_accuracy(logits, t, w).item(), ((near * w).sum() / w.sum()).item()))
    last = hist[-50:]
    mean = lambda i: sum(h[i] for h in last) / len(last)
    return dict(condition=name, inputs=DESCRIBE[name], loss=round(mean(0), 4), acc=round(mean(1), 4),
                near=round(mean(2), 4), steps=steps, seconds=round(time.time() - t0, 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='results/location_causes.json', help='JSON file to write')
    ap.add_argument('--steps', type=int, default=780, help='optimiser steps per condition (default: the default run\'s 780)')
    ap.add_argument('--conditions', default=','.join(CONDITIONS), help='comma-separated names from: ' + ', '.join(CONDITIONS))
    ap.add_argument('--jobs', type=int, default=2, help='conditions trained at once, one thread each')
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.conditions.split(',') if n.strip()]
    bad = [n for n in names if n not in CONDITIONS]
    if bad: ap.error(f"--conditions: unknown {bad[0]!r}; choose from {list(CONDITIONS)}")
    if a.steps < 60: ap.error(f"--steps {a.steps}: must be at least 60 (the accuracy is the mean of the last 50)")
    out = os.path.abspath(a.out)
    if not os.path.isdir(os.path.dirname(out)): ap.error(f"--out {a.out}: folder {os.path.dirname(out)} does not exist")
    t0 = time.time()
    warmup = min(78, a.steps // 10)
    with ProcessPoolExecutor(a.jobs) as ex:
        runs = list(ex.map(train, names, [a.steps] * len(names), [64] * len(names), [3.75e-4] * len(names),
                           [warmup] * len(names)))
    cmd = 'python tools/location_causes.py' + ''.join(f' {k} {v!r}' if ' ' in str(v) else f' {k} {v}' for k, v in (
        ('--out', a.out), ('--steps', a.steps), ('--conditions', a.conditions), ('--jobs', a.jobs))
        if v != ap.get_default(k[2:]))
    res = dict(command=cmd, chance=1 / 64, seconds=round(time.time() - t0, 1), runs=runs)
    tmp = out + '.tmp'
    with open(tmp, 'w') as f: json.dump(res, f, indent=1)
    os.replace(tmp, out)
    for r in runs:
        print(f"{r['condition']:22s} accuracy {100 * r['acc']:5.1f}% = {r['acc'] * 64:4.1f} x chance | "
              f"within one patch {100 * r['near']:5.1f}% | {r['seconds']:.0f} s")


if __name__ == '__main__': main()
