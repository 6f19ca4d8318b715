"""Time the reference MAE's training step (facebookresearch/mae's `MaskedAutoencoderViT`, as written
again from timm's `PatchEmbed` and `Block` in tests/test_interop.py) in fp32 eager with AdamW, to
compare with `cmae_bench --method mae --arch vit_base` in the same sitting. Needs timm (a dev
dependency). Shapes: ViT-B (768 wide, 12 blocks, 12 heads), decoder 512 wide, 8 blocks, 16 heads.

Usage: python tools/bench_reference_mae.py [--img-size 64 --patch-size 8 --bs 64 --steps 3 --warmup 1]
Prints one JSON line: step_ms (median) and img_per_s."""
import argparse, json, statistics, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests'))
from test_interop import RefMAE


def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(img_size=64, patch_size=8, bs=64, steps=3, warmup=1).items():
        ap.add_argument('--' + k.replace('_', '-'), type=int, default=v)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = RefMAE(a.img_size, a.patch_size, embed_dim=768, depth=12, num_heads=12)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(.9, .95), weight_decay=.05)
    x = torch.randn(a.bs, 3, a.img_size, a.img_size)
    L = (a.img_size // a.patch_size) ** 2
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss, _, _ = model(x, .75, torch.rand(a.bs, L))
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if i >= a.warmup: times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(json.dumps(dict(model='reference MAE ViT-B (tests/test_interop.py RefMAE)', img_size=a.img_size,
                          patch_size=a.patch_size, bs=a.bs, precision='fp32',
                          threads=torch.get_num_threads(), step_ms=round(ms, 1),
                          img_per_s=round(a.bs / ms * 1e3, 2))))


if __name__ == '__main__':
    main()
