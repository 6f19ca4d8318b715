"""ViT encoder checks that need more than a notebook cell: the MAE masked-encoder path against an independent
computation with timm's modules, bf16 autocast, gradients, and CPU/CUDA agreement (skipped without CUDA)."""
import pytest
import torch
from cmae_course.patching import random_masking, get_2d_sincos_pos_embed
from cmae_course.vit import ViT, vit_tiny

timm = pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer  # noqa: E402


def _pair(cfg, seed=0):
    torch.manual_seed(seed)
    ours = ViT(**cfg).eval()
    for p in ours.parameters(): p.data += 0.02 * torch.randn_like(p)   # non-trivial LN / bias values
    ours.pos_embed.data.copy_(get_2d_sincos_pos_embed(ours.embed_dim, ours.grid_size, cls_token=True)[None])
    ref = VisionTransformer(img_size=ours.patch_embed.img_size, patch_size=ours.patch_size, in_chans=ours.in_chans,
                            embed_dim=ours.embed_dim, depth=len(ours.blocks), num_heads=ours.num_heads,
                            qkv_bias=True, num_classes=0).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


def _ref_masked_encoder(ref, imgs, mask_ratio, noise):
    "MAE's forward_encoder written out with timm's modules and plain indexing (no cmae_course code)."
    x = ref.patch_embed(imgs) + ref.pos_embed[:, 1:]
    N, L, D = x.shape
    keep = int(L * (1 - mask_ratio))
    order = noise.argsort(dim=1)
    x = torch.stack([x[i, order[i, :keep]] for i in range(N)])
    mask = torch.ones(N, L)
    for i in range(N): mask[i, order[i, :keep]] = 0
    cls = (ref.cls_token + ref.pos_embed[:, :1]).expand(N, -1, -1)
    x = torch.cat([cls, x], 1)
    for blk in ref.blocks: x = blk(x)
    return ref.norm(x), mask


@pytest.mark.parametrize("cfg", [dict(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=4),
                                 dict(img_size=(24, 40), patch_size=8, in_chans=4, embed_dim=32, depth=2, num_heads=2)])
def test_masked_encoder_matches_timm(cfg):
    ours, ref = _pair(cfg)
    imgs = torch.randn(3, ours.in_chans, *ours.patch_embed.img_size)
    noise = torch.rand(3, ours.num_patches)
    with torch.no_grad():
        latent, mask, ids_restore = ours.forward_encoder(imgs, 0.75, noise)
        ref_latent, ref_mask = _ref_masked_encoder(ref, imgs, 0.75, noise)
    diff = (latent - ref_latent).abs().max().item()
    print(f"{cfg}: masked encoder max abs diff vs timm = {diff:.2e}")
    assert diff < 1e-4
    assert torch.equal(mask, ref_mask)
    assert torch.equal(ids_restore.argsort(1), noise.argsort(1))


def test_gradients_and_fixed_pos_embed():
    torch.manual_seed(0)
    m = ViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    latent, _, _ = m.forward_encoder(torch.randn(2, 3, 32, 32), 0.5)
    latent.square().mean().backward()
    assert m.pos_embed.grad is None and not m.pos_embed.requires_grad
    assert m.cls_token.grad is not None and m.cls_token.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in m.named_parameters() if p.requires_grad)


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    m = ViT(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, drop_path=0.5)
    x = torch.randn(8, 3, 32, 32)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train(); torch.manual_seed(1); a = m(x); torch.manual_seed(2); b = m(x)
    assert not torch.allclose(a, b)
    assert m.blocks[0].drop_path.__class__.__name__ == "Identity" and abs(m.blocks[-1].drop_path.p - 0.5) < 1e-9


def test_bf16_autocast_cpu():
    torch.manual_seed(0)
    m = vit_tiny(img_size=32, patch_size=8, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, attn = m(x, return_attn=True)
            fast = m(x)
    assert attn.shape == (2, 3, 17, 17) and torch.isfinite(out).all()   # final LayerNorm runs in float32 under autocast
    assert (out.float() - ref).abs().max() < 0.1 and (fast.float() - ref).abs().max() < 0.1
    assert torch.allclose(attn.float().sum(-1), torch.ones(2, 3, 17), atol=2e-2)


def test_bad_inputs_one_line_errors():
    m = ViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    for f, msg in [(lambda: m(torch.randn(2, 3, 16, 16)), "imgs must have shape"),
                   (lambda: m.forward_encoder(torch.randn(2, 3, 32, 32), 1.0), "mask_ratio"),
                   (lambda: m.forward_encoder(torch.randn(2, 3, 32, 32), 0.5, torch.rand(2, 5)), "noise must have shape"),
                   (lambda: ViT(img_size=30, patch_size=8), "not divisible")]:
        with pytest.raises(ValueError, match=msg) as e: f()
        assert "\n" not in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    m = vit_tiny(img_size=64, patch_size=8, depth=2).eval()
    x, noise = torch.randn(4, 3, 64, 64), torch.rand(4, 64)
    with torch.no_grad():
        cpu = m.forward_encoder(x, 0.75, noise)[0]
        mc = m.cuda()
        gpu = mc.forward_encoder(x.cuda(), 0.75, noise.cuda())[0].cpu()
        fast, (slow, attn) = mc(x.cuda()), mc(x.cuda(), return_attn=True)
    assert (cpu - gpu).abs().max() < 1e-3
    assert (fast - slow).abs().max() < 1e-3 and attn.device.type == "cuda"
