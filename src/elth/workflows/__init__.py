"""Ticket workflows: the steps that train and make tickets, built on the layers below.

`imp` (iterative magnitude pruning with rewinding), `rewind` (the dense run to the rewind step,
shared by IMP and the baselines), `ticket_training` (train a ticket with its mask fixed),
`baseline_tickets` (tickets of the pruning baselines, snip-extra included, which uses `elastic`),
`dst_training` (RigL/DPF runs) and `torch_prune` (conversion to `torch.nn.utils.prune` form).
"""
from elth.workflows.imp import IMPConfig, LevelResult, run_imp
from elth.workflows.rewind import rewind_point
from elth.workflows.ticket_training import train_ticket
from elth.workflows.torch_prune import from_torch_prune, to_torch_prune

__all__ = [
    "IMPConfig",
    "LevelResult",
    "from_torch_prune",
    "rewind_point",
    "run_imp",
    "to_torch_prune",
    "train_ticket",
]
