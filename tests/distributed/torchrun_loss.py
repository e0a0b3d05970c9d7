"""Launched by test_distributed.py as
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed/torchrun_loss.py
Every rank computes the rank-local distributed loss of its slice of the seeded global batch and runs
the backward; rank 0 prints the rank-averaged loss (= the full-batch loss) as `LOSS <value>`.
"""

import os
import sys

from dist_harness import child_env, make_batch, rank_slice

os.environ.update(child_env())  # before cxrfast (and so triton) is imported

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from cxrfast import distributed  # noqa: E402

B_LOCAL, DIM = 3, 5


def main() -> int:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == int(os.environ["WORLD_SIZE"]) == 2, world
    image, text, groups = make_batch(world, B_LOCAL, DIM, groups=True, seed=7)
    sl = rank_slice(rank, B_LOCAL)
    img = image[sl].clone().requires_grad_(True)
    loss = distributed.contrastive_loss(img, text[sl], 4.0, groups=groups[sl], label_smoothing=0.1,
                                        weights=(0.75, 0.25), impl="chunked")
    loss.backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    mean /= world
    if rank == 0:
        print(f"LOSS {mean.item():.15e}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
