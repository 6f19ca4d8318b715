#!/usr/bin/env python
"""Write an image folder the course has never seen, to check that its recipe is not tuned to the embedded shapes.

    python tools/make_glyphs.py --out data/glyphs [--n-train 300] [--n-val 50] [--size 64] [--seed 0] [--bold 0]

ImageFolder layout (`<out>/train/<class>/*.png`, `<out>/val/<class>/*.png`), 10 classes: the letters A C E F H K M R S X, each
drawn in one of the typefaces matplotlib ships (DejaVu Sans / Serif / Mono, STIX, Computer Modern; bold, italic), at a random
size, rotation, position and colour (at least 80 of 255 in luminance away from the background it covers, so that every
letter can be seen; half of the images grayscale), on crops of the photographs and terrain maps matplotlib ships
as sample data, with a few smaller digits as clutter. Unlike the embedded dataset: other shapes (letters), other textures
(photographs, terrain), other clutter (glyphs), no box annotations, and ImageFolder instead of Tiny-ImageNet's layout.
`--bold 0.06` thickens every letter's strokes by 6% of its size on each side, so that the letters stay legible when a
workshop-sized encoder sees them at 32 pixels (lesson 16 measures why that matters). Nothing is downloaded: the fonts
and images come with the installed matplotlib.
"""
import argparse
from pathlib import Path
import numpy as np
from PIL import Image, ImageDraw, ImageFont

CLASSES = tuple('ACEFHKMRSX')


def _mpl_data():
    import matplotlib
    return Path(matplotlib.get_data_path())


def fonts():
    d = _mpl_data()/'fonts'/'ttf'
    names = ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSans-Oblique.ttf', 'DejaVuSerif.ttf', 'DejaVuSerif-Bold.ttf',
             'DejaVuSerif-Italic.ttf', 'DejaVuSansMono.ttf', 'DejaVuSansMono-Bold.ttf', 'STIXGeneral.ttf', 'STIXGeneralBol.ttf',
             'STIXGeneralItalic.ttf', 'cmr10.ttf', 'cmss10.ttf']
    return [str(d/n) for n in names if (d/n).is_file()]


def backgrounds():
    "RGB uint8 arrays: matplotlib's sample photographs and its terrain grids rendered with colour maps."
    import matplotlib
    d, out = _mpl_data()/'sample_data', []
    for f in ('grace_hopper.jpg', 'Minduka_Present_Blue_Pack.png', 'logo2.png'):
        if (d/f).is_file(): out.append(np.asarray(Image.open(d/f).convert('RGB')))
    for f, key, cmap in (('jacksboro_fault_dem.npz', 'elevation', 'gist_earth'), ('topobathy.npz', 'topo', 'terrain')):
        if (d/f).is_file():
            z = np.load(d/f)[key].astype(np.float32)
            z = (z - np.nanmin(z)) / max(np.nanmax(z) - np.nanmin(z), 1e-6)
            out.append((matplotlib.colormaps[cmap](np.nan_to_num(z))[..., :3] * 255).astype(np.uint8))
    if not out: raise SystemExit("make_glyphs: matplotlib's sample data is missing")
    return out


def render(letter, rng, fonts_, bgs, size=64, bold=0.):
    bg = bgs[rng.integers(len(bgs))]
    s = int(rng.integers(size, min(bg.shape[:2]) + 1))                       # a random crop of a random background
    y, x = rng.integers(0, bg.shape[0] - s + 1), rng.integers(0, bg.shape[1] - s + 1)
    img = Image.fromarray(bg[y:y + s, x:x + s]).resize((size, size), Image.BILINEAR)
    arr = np.asarray(img).astype(np.float32) * rng.uniform(0.5, 1.0) + rng.uniform(0, 80)   # dim it so glyphs stay visible
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    for _ in range(rng.integers(1, 4)):                                      # clutter: small digits
        _glyph(img, str(rng.integers(10)), fonts_[rng.integers(len(fonts_))], rng.uniform(0.15, 0.3) * size, rng, size)
    _glyph(img, letter, fonts_[rng.integers(len(fonts_))], rng.uniform(0.45, 0.85) * size, rng, size, bold)
    if rng.random() < 0.5: img = img.convert('L').convert('RGB')
    return img


def _glyph(img, ch, font, px, rng, size, bold=0.):
    "Paste `ch` at a random place; `bold` > 0 thickens its strokes by `bold * px` pixels on each side."
    f, sw = ImageFont.truetype(font, max(6, int(px))), int(round(bold * px))
    l, t, r, b = f.getbbox(ch, stroke_width=sw)
    tile = Image.new('L', (r - l + 8, b - t + 8), 0)
    ImageDraw.Draw(tile).text((4 - l, 4 - t), ch, font=f, fill=255, stroke_width=sw, stroke_fill=255)
    tile = tile.rotate(rng.uniform(-25, 25), resample=Image.BILINEAR, expand=True)
    w, h = tile.size
    x, y = int(rng.integers(0, max(1, size - w + 1))), int(rng.integers(0, max(1, size - h + 1)))
    img.paste(Image.new('RGB', tile.size, _visible_colour(img.crop((x, y, x + w, y + h)), rng)), (x, y), tile)


def _luma(rgb): return float(np.asarray(rgb, np.float32).reshape(-1, 3).mean(0) @ np.float32([0.299, 0.587, 0.114]))


def _visible_colour(region, rng, min_contrast=80.):
    "A random colour whose luminance differs from the `region` it is drawn on by at least `min_contrast` (of 255)."
    bg = _luma(np.asarray(region))
    for _ in range(20):
        col = rng.integers(0, 256, 3)
        if abs(_luma(col) - bg) >= min_contrast: break
    else: col = np.zeros(3) if bg > 127 else np.full(3, 255)
    return tuple(int(c) for c in col)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='data/glyphs'); ap.add_argument('--n-train', type=int, default=300)
    ap.add_argument('--n-val', type=int, default=50); ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--bold', type=float, default=0.,
                    help='thicken each letter\'s strokes by this share of its size (0: the default letters; 0.06: bold)')
    a = ap.parse_args()
    if not 0 <= a.bold <= 0.2: ap.error(f'--bold: must be in [0, 0.2] (a share of the letter size), got {a.bold}')
    out, fonts_, bgs = Path(a.out), fonts(), backgrounds()
    for split, n, sid in (('train', a.n_train, 0), ('val', a.n_val, 1)):
        for ci, letter in enumerate(CLASSES):
            d = out/split/letter; d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                render(letter, np.random.default_rng([a.seed, sid, ci, k]), fonts_, bgs, a.size, a.bold).save(d/f'{letter}_{k}.png')
    print(f"{out}: {len(CLASSES)} classes, {a.n_train} train + {a.n_val} val images each, {a.size} px, {len(fonts_)} typefaces, "
          f"{len(bgs)} backgrounds")


if __name__ == '__main__':
    main()
