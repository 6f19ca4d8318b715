"Two CPU processes (gloo): InfoNCE with all-gathered keys must reproduce the one-process loss of the global batch."
import os, tempfile
import torch, torch.nn.functional as F
import torch.distributed as dist
import torch.multiprocessing as mp
from cmae_course.contrastive import concat_all_gather, info_nce, info_nce_logits, dist_info

WORLD, N, C, TAU = 2, 3, 8, 0.2

def global_batch():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(WORLD * N, C, generator=g), dim=-1)
    k = F.normalize(torch.randn(WORLD * N, C, generator=g), dim=-1)
    return q, k

def _worker(rank, tmp):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{tmp}/rendezvous', rank=rank, world_size=WORLD)
    try:
        q, k = global_batch()
        q_loc = q[rank * N:(rank + 1) * N].clone().requires_grad_(True)
        k_loc = k[rank * N:(rank + 1) * N]
        logits, labels = info_nce_logits(q_loc, k_loc, TAU)
        loss = info_nce(q_loc, k_loc, TAU)
        loss.backward()
        torch.save(dict(info=dist_info(), gathered=concat_all_gather(k_loc), logits=logits.detach(), labels=labels,
                        loss=loss.detach(), grad=q_loc.grad), f'{tmp}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()

def test_gathered_negatives_two_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(tmp,), nprocs=WORLD, join=True)
        res = [torch.load(f'{tmp}/rank{r}.pt') for r in range(WORLD)]
    q, k = global_batch()
    qg = q.clone().requires_grad_(True)
    ref = info_nce(qg, k, TAU)                      # one process, whole batch
    ref.backward()
    for r, out in enumerate(res):
        assert out['info'] == (r, WORLD)
        torch.testing.assert_close(out['gathered'], k)                              # keys of every rank, in rank order
        torch.testing.assert_close(out['labels'], torch.arange(N) + N * r)          # positives at arange + N*rank
        assert out['logits'].shape == (N, WORLD * N)
        torch.testing.assert_close(out['logits'], q[r * N:(r + 1) * N] @ k.t() / TAU)
        hand = F.cross_entropy(q[r * N:(r + 1) * N] @ k.t() / TAU, torch.arange(N) + N * r)
        torch.testing.assert_close(out['loss'], hand)
        # the mean over ranks of the local losses is the global loss, and so are the gradients (times WORLD)
        torch.testing.assert_close(out['grad'], WORLD * qg.grad[r * N:(r + 1) * N])
    torch.testing.assert_close(sum(o['loss'] for o in res) / WORLD, ref.detach())
    # labels without the rank offset would pick another image's key as the positive: that loss differs
    wrong = F.cross_entropy(q[N:] @ k.t() / TAU, torch.arange(N))
    assert not torch.allclose(wrong, res[1]['loss'])

def test_single_process_fallback():
    q, k = global_batch()
    assert dist_info() == (0, 1)
    torch.testing.assert_close(concat_all_gather(k), k)
    logits, labels = info_nce_logits(q, k, TAU)
    torch.testing.assert_close(labels, torch.arange(WORLD * N))
