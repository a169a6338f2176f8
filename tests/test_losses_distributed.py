"""The masked losses across processes (the multi-GPU path) on CPU with torch.distributed's gloo
backend: two processes, each holding half of the batch with gather_across_devices=True, must give
the loss and gradients of one process holding the whole batch (DDP averages the per-process
gradients). Real process group, real all_gather; only the device is a CPU."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from multicsr_core.losses import MaskedInfoNCELoss, OfficialMaskedBCELoss

GLOBAL_BATCH, DIM, WORLD = 8, 16, 2


def _inputs():
    g = torch.Generator().manual_seed(0)
    embeddings = [torch.randn(GLOBAL_BATCH, DIM, generator=g) for _ in range(3)]  # anchor, positive, negative
    guide = torch.randn(3 * GLOBAL_BATCH, 8, generator=g)
    guide[GLOBAL_BATCH + 5] = guide[0] + 0.01 * guide[GLOBAL_BATCH + 5]  # anchor 0 ~ positive of row 5: masked
    guide[2 * GLOBAL_BATCH + 6] = guide[1]  # anchor 1 == hard negative of row 6: masked
    ids = torch.stack([torch.arange(GLOBAL_BATCH) + k * GLOBAL_BATCH for k in range(3)], dim=1)
    return embeddings, guide, ids


def _loss(name: str, guide, gather: bool):
    cls = MaskedInfoNCELoss if name == "paper" else OfficialMaskedBCELoss
    return cls(torch.nn.Identity(), guide, tau=0.05, gather_across_devices=gather)


def _worker(rank: int, name: str, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        embeddings, guide, ids = _inputs()
        rows = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
        local = [e[rows].clone().requires_grad_(True) for e in embeddings]
        loss = _loss(name, guide, gather=True).compute_loss_from_embeddings(local, ids[rows])
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": [t.grad / WORLD for t in local]},  # DDP's gradient average
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["paper", "official"])
def test_two_process_gather_equals_one_global_batch(tmp_path, name):
    mp.start_processes(_worker, args=(name, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD,
                       start_method="spawn", join=True)
    embeddings, guide, ids = _inputs()
    full = [e.clone().requires_grad_(True) for e in embeddings]
    loss = _loss(name, guide, gather=False).compute_loss_from_embeddings(full, ids)
    loss.backward()
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    # the global loss is the mean of the per-process means (equal local batch sizes)
    assert torch.allclose(torch.stack([p["loss"] for p in parts]).mean(), loss.detach(), atol=1e-5)
    for column in range(3):
        gathered = torch.cat([p["grads"][column] for p in parts])
        assert torch.allclose(gathered, full[column].grad, atol=1e-5), (name, column)
