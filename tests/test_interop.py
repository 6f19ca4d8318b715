"""Interop tests: official-MAE checkpoints and timm export, each against an independent oracle.

The oracle for `load_official_mae` is `RefMAE` below: an independent re-implementation of facebookresearch/mae's
`models_mae.MaskedAutoencoderViT` built from timm's `PatchEmbed` and `Block` (as the reference is), with its
numpy sin-cos position embedding. Two deliberate deviations from the reference text, neither touching the maths:
timm's current `Block` has no `qk_scale` argument (dropped), and `random_masking` takes the `noise` tensor as an
argument instead of drawing it inside, so both models can see the same mask. No weights are downloaded: the oracle
gets random weights, its state dict is saved in the official `{'model': state_dict}` format and loaded back.
Run with `pytest -s` to see the max abs differences.
"""
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

timm = pytest.importorskip('timm')
from timm.models.vision_transformer import PatchEmbed, Block

from cmae_course.interop import (load_official_mae, load_official_encoder, export_official_mae, export_timm,
                                 timm_config, official_mae_config)
from cmae_course.mae import create_mae


# ---------------------------------------------------------------- the oracle (test only) ---------------------------
def ref_1d_sincos(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.)
    omega = 1. / 10000 ** omega
    out = np.einsum('m,d->md', pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def ref_2d_sincos(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])   # w goes first
    emb = np.concatenate([ref_1d_sincos(embed_dim // 2, grid[0]), ref_1d_sincos(embed_dim // 2, grid[1])], axis=1)
    if cls_token: emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


class RefMAE(nn.Module):
    "facebookresearch/mae MaskedAutoencoderViT, written again from the reference (see module docstring)."
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=1024, depth=24, num_heads=16,
                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6), norm_pix_loss=False):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                                     for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True,
                                                   norm_layer=norm_layer) for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans, bias=True)
        self.norm_pix_loss = norm_pix_loss
        self.in_chans = in_chans
        g = int(num_patches ** .5)
        self.pos_embed.data.copy_(torch.from_numpy(ref_2d_sincos(embed_dim, g, True)).float().unsqueeze(0))
        self.decoder_pos_embed.data.copy_(torch.from_numpy(ref_2d_sincos(decoder_embed_dim, g, True)).float().unsqueeze(0))

    def patchify(self, imgs):
        p = self.patch_embed.patch_size[0]
        h = w = imgs.shape[2] // p
        x = imgs.reshape(shape=(imgs.shape[0], self.in_chans, h, p, w, p))
        x = torch.einsum('nchpwq->nhwpqc', x)
        return x.reshape(shape=(imgs.shape[0], h * w, p ** 2 * self.in_chans))

    def random_masking(self, x, mask_ratio, noise):
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(self, x, mask_ratio, noise):
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks: x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1)
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks: x = blk(x)
        x = self.decoder_norm(x)
        return self.decoder_pred(x)[:, 1:, :]

    def forward_loss(self, imgs, pred, mask):
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.e-6) ** .5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs, mask_ratio, noise):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


def randomize_(model, seed=0):
    "Every parameter random (LayerNorm weights around 1), so that a swapped or dropped key cannot go unnoticed."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * r if ('norm' in name and name.endswith('weight')) else 0.05 * r)
    return model


def max_diffs(a, b):
    return [(x - y).abs().max().item() for x, y in zip(a, b)]


CONFIGS = {   # small, fast configurations; the first one uses the MAE head preset (192 -> 3), the second an override
    'tiny192': dict(ref=dict(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3,
                             decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=16), load={}),
    'odd96': dict(ref=dict(img_size=48, patch_size=4, in_chans=1, embed_dim=96, depth=3, num_heads=4, mlp_ratio=2.,
                           decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4),
                  load=dict(num_heads=4, decoder_num_heads=4), unfused=True),
}   # unfused: the oracle computes softmax(q k^T / sqrt(d)) v explicitly (timm fused_attn=False), a different kernel


@pytest.mark.parametrize('norm_pix_loss', [False, True])
@pytest.mark.parametrize('cfg', list(CONFIGS))
def test_official_checkpoint_matches_reference(tmp_path, cfg, norm_pix_loss):
    torch.manual_seed(0)
    c = CONFIGS[cfg]
    ref = randomize_(RefMAE(norm_pix_loss=norm_pix_loss, **c['ref'])).eval()
    if c.get('unfused'):
        for blk in [*ref.blocks, *ref.decoder_blocks]: blk.attn.fused_attn = False
    path = tmp_path / 'checkpoint-0.pth'
    torch.save({'model': ref.state_dict(), 'epoch': 0}, path)
    ours = load_official_mae(path, norm_pix_loss=norm_pix_loss, **c['load']).eval()
    n_chans, size = c['ref'].get('in_chans', 3), c['ref']['img_size']
    imgs = torch.randn(3, n_chans, size, size)
    noise = torch.rand(3, ours.encoder.num_patches)
    with torch.no_grad():
        expected, got = ref(imgs, 0.75, noise), ours(imgs, mask_ratio=0.75, noise=noise)
        got = got['loss'], got['pred'], got['mask']     # the reference returns this tuple
    d = max_diffs(expected, got)
    print(f'\n[{cfg}{", unfused oracle" if c.get("unfused") else ""}, norm_pix_loss={norm_pix_loss}] max abs diff vs reference MAE: loss {d[0]:.2e}  pred {d[1]:.2e}  mask {d[2]:.0e}')
    assert torch.equal(expected[2], got[2])
    assert d[0] < 1e-5 and d[1] < 1e-4


def test_config_inference():
    ref = RefMAE(**CONFIGS['odd96']['ref'])
    cfg = official_mae_config(ref.state_dict(), num_heads=4, decoder_num_heads=4)
    assert cfg == dict(img_size=48, patch_size=4, in_chans=1, embed_dim=96, depth=3, num_heads=4, mlp_ratio=2.,
                       decoder_dim=32, decoder_depth=1, decoder_num_heads=4, decoder_mlp_ratio=2.)
    with pytest.raises(ValueError, match='num_heads'):   # 96 is not an MAE preset width
        official_mae_config(ref.state_dict())


def test_bare_state_dict_and_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = create_mae('vit_tiny', img_size=32, patch_size=8, depth=2, dec_dim=64, dec_depth=2)
    official = export_official_mae(model)
    assert set(official) == {'model'} and 'decoder_blocks.1.mlp.fc2.bias' in official['model']
    torch.save(official['model'], tmp_path / 'bare.pth')           # a bare state dict, no 'model' entry
    back = load_official_mae(tmp_path / 'bare.pth')
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def _saved_ref(tmp_path, drop=(), extra=None):
    sd = randomize_(RefMAE(**CONFIGS['tiny192']['ref'])).state_dict()
    for k in drop: del sd[k]
    sd.update(extra or {})
    torch.save({'model': sd}, tmp_path / 'ck.pth')
    return tmp_path / 'ck.pth'


def test_strict_keys(tmp_path):
    path = _saved_ref(tmp_path, drop=['blocks.1.attn.proj.bias', 'mask_token'],
                      extra={'head.weight': torch.zeros(10, 192), 'decoder_blocks.0.attn.q_bias': torch.zeros(64)})
    with pytest.raises(ValueError) as e:
        load_official_mae(path)
    msg = str(e.value)
    assert '\n' not in msg
    for k in ['blocks.1.attn.proj.bias', 'mask_token', 'head.weight', 'decoder_blocks.0.attn.q_bias']: assert k in msg
    print('\n' + msg)


def test_missing_shape_keys_and_files(tmp_path):
    with pytest.raises(ValueError, match='decoder_pred.weight'):
        load_official_mae(_saved_ref(tmp_path, drop=['decoder_pred.weight']))
    with pytest.raises(ValueError, match=r"shape mismatches \['decoder_pos_embed \(1, 5, 64\) vs \(1, 17, 64\)'\]"):
        load_official_mae(_saved_ref(tmp_path, extra={'decoder_pos_embed': torch.zeros(1, 5, 64)}))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_official_mae(tmp_path / 'nope.pth')
    torch.save({'model': [1, 2, 3]}, tmp_path / 'list.pth')
    with pytest.raises(ValueError, match='state dict'):
        load_official_mae(tmp_path / 'list.pth')


class _Evil:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(_Evil.marker),))


def test_loading_never_runs_code(tmp_path):
    _Evil.marker = str(tmp_path / 'pwned')
    torch.save({'model': _Evil()}, tmp_path / 'evil.pth')
    with pytest.raises(ValueError, match='weights_only'):
        load_official_mae(tmp_path / 'evil.pth')
    assert not (tmp_path / 'pwned').exists()


def test_load_official_encoder(tmp_path):
    ref = randomize_(RefMAE(**CONFIGS['tiny192']['ref'])).eval()
    enc_only = {k: v for k, v in ref.state_dict().items()
                if not k.startswith('decoder') and k != 'mask_token'}      # as in released mae_pretrain_vit_*.pth files
    torch.save({'model': enc_only}, tmp_path / 'enc.pth')
    enc = load_official_encoder(tmp_path / 'enc.pth').eval()
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        a, b = ref.forward_encoder(imgs, 0.75, noise), enc.forward_encoder(imgs, mask_ratio=0.75, noise=noise)
    d = max_diffs(a[:1], b[:1])[0]
    print(f'\nencoder-only checkpoint: max abs diff of latent vs reference {d:.2e}')
    assert d < 1e-5 and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match='decoder'):     # the full loader wants a decoder
        load_official_mae(tmp_path / 'enc.pth')


# ---------------------------------------------------------------- timm export -------------------------------------
@pytest.mark.parametrize('arch', ['vit_tiny', 'vit_small', 'vit_base'])
def test_export_timm_same_features(arch):
    torch.manual_seed(0)
    enc = randomize_(create_mae(arch, img_size=32, patch_size=8, depth=2, dec_dim=32, dec_depth=1).encoder).eval()
    name, kwargs = timm_config(enc)
    assert name == {'vit_tiny': 'vit_tiny_patch16_224', 'vit_small': 'vit_small_patch16_224',
                    'vit_base': 'vit_base_patch16_224'}[arch]
    assert kwargs['pretrained'] is False          # nothing is downloaded
    tm = timm.create_model(name, **kwargs).eval()
    tm.load_state_dict(export_timm(enc), strict=True)
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours, feats, pooled = enc(imgs), tm.forward_features(imgs), tm(imgs)
    for blk in tm.blocks: blk.attn.fused_attn = False                  # timm's explicit-softmax path, another kernel
    with torch.no_grad(): unfused = tm.forward_features(imgs)
    d_tokens, d_cls = (ours - feats).abs().max().item(), (ours[:, 0] - pooled).abs().max().item()
    d_unfused = (ours - unfused).abs().max().item()
    print(f'\n[{arch} -> {name}] max abs diff: all tokens {d_tokens:.2e}, pooled cls feature {d_cls:.2e}, '
          f'all tokens vs unfused timm attention {d_unfused:.2e}')
    assert pooled.shape == (2, enc.embed_dim) and d_tokens < 1e-4 and d_cls < 1e-4 and d_unfused < 1e-4
