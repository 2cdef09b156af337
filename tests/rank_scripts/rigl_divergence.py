"""Run by torchrun (2 ranks, gloo): RigL's mask update on each rank's own gradients must stop the run.

Without the all-reduce of the dense gradients (each rank growing by its local gradients, the
divergence reported against other pruning tools), the ranks' masks differ after the first update
and `check_identical` raises. With DDP's all-reduced gradients, the same update agrees on every rank.
"""
import sys

import torch
import torch.nn.functional as F
from torch import nn

from elth.data import load_dataset
from elth.models import build_model
from elth.sparsity.dst.rigl import RigL
from elth.training import distributed
from elth.training.loop import make_optimizer
from elth.training.protocol import Protocol

distributed.init("cpu")
data = load_dataset("digits")
x, y = data.scoring_examples(8, seed=0)  # 80 examples, the same on every rank
x, y = distributed.local_batch(x, y)  # each rank: its half


def update_once(wrap: bool) -> str:
    model = build_model("mlp_2", data.info.input_shape, data.info.num_classes, seed=0)
    controller = RigL(0.9, 100, update_every=10)
    controller.attach(model, make_optimizer(model, Protocol(length="100it", batch_size=80, lr=0.1)))
    net = nn.parallel.DistributedDataParallel(model) if wrap else model
    F.cross_entropy(net(x), y).backward()
    try:
        controller.after_backward(10)  # an update step: drop by |w|, grow by |dense gradient|
    except distributed.RankDivergenceError as e:
        return f"diverged: {e}"
    return "identical"


print(f"rank {distributed.rank()} local gradients: {update_once(wrap=False)}", flush=True)
print(f"rank {distributed.rank()} all-reduced gradients: {update_once(wrap=True)}", flush=True)
# Leave together: a rank that tears its process group down while the other still talks to it can
# abort the other ("terminate called without an active exception").
torch.distributed.barrier()
torch.distributed.destroy_process_group()
sys.exit(0)
