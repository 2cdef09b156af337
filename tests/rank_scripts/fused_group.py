"""Run by torchrun (2 ranks, gloo): three tickets of the model named by the second argument
trained as one fused group over both ranks;
rank 0 saves each member's final weights to m<i>.pt in the working directory (see
test_distributed.py, which trains the same group in one process)."""
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, sys.argv[1])  # the tests folder
from test_distributed import fused_group_members  # noqa: E402

from elth.training import (
    distributed,  # noqa: E402
    train_group,  # noqa: E402
)

distributed.init("cpu")
data, protocol, members = fused_group_members(sys.argv[2])
train_group(members, data, protocol, progress=False, device="cpu", members_at_once=3)
if distributed.is_main():
    for i, m in enumerate(members):
        torch.save(m.model.state_dict(), f"m{i}.pt")
dist.barrier()
dist.destroy_process_group()
