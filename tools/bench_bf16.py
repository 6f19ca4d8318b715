"""CPU bf16-autocast vs fp32: median seconds per MAE training step (forward + backward + AdamW).
Usage: python tools/bench_bf16.py   (uses 2 threads; run on a quiet machine, timings shift with load)."""
import time, torch
from cmae_course.mae import create_mae
from cmae_course.devices import cpu_has_native_bf16


def bench(prec, model, x, n=4):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    ts = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=prec == 'bf16'):
            loss = model(x, mask_ratio=0.75)['loss']
        loss.float().backward(); opt.step(); opt.zero_grad()
        if i: ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


if __name__ == '__main__':
    torch.manual_seed(0); torch.set_num_threads(2)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_native_bf16()}")
    for arch in ('vit_tiny', 'vit_small'):
        m = create_mae(arch, img_size=64, patch_size=8, dec_dim=128, dec_depth=2, dec_heads=4)
        x = torch.randn(32, 3, 64, 64)
        r = {p: bench(p, m, x) for p in ('fp32', 'bf16')}
        print(f"{arch} 64px/p8 dec128d2 bs32: fp32 {r['fp32']*1e3:.0f} ms/step, bf16 {r['bf16']*1e3:.0f} ms/step, "
              f"bf16/fp32 {r['bf16']/r['fp32']:.2f}", flush=True)
