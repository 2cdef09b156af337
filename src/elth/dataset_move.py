"""Moving a ticket to another dataset (the paper's Appendix D: transfer across datasets).

A ticket found on one dataset trains on another when the network's weights fit both: the same
number of input channels for conv nets (their spatial size is free: global average pooling), the
same input size for MLPs. Every weight and mask is kept, with one exception: when the class counts
differ, the output layer is replaced by a freshly initialised one (seeded) whose mask keeps the
old layer's density at random positions (dense if the model keeps its output layer dense). The
result records where it came from; combined with `elth.elastic.transform` it moves across depth and
dataset at once.
"""
from __future__ import annotations

import copy

import torch

from elth.data.base import DatasetInfo
from elth.models import build_model
from elth.sparsity.baselines import derived_seed
from elth.tickets import Ticket, TicketError


class DatasetMoveError(TicketError):
    """A ticket whose weights cannot fit the other dataset's inputs."""


def to_dataset(ticket: Ticket, info: DatasetInfo, *, seed: int = 0) -> Ticket:
    """The ticket retargeted to dataset `info` (see the module docstring); `seed` draws a new head."""
    mine = ticket.dataset
    if tuple(mine.input_shape) == tuple(info.input_shape) and mine.num_classes == info.num_classes:
        result = copy.deepcopy(ticket)
        result.dataset = info
        result.provenance = _provenance(ticket, info, head=None)
        return result
    if mine.input_shape[0] != info.input_shape[0]:
        raise DatasetMoveError(
            f"the ticket's {ticket.model} takes {mine.input_shape[0]}-channel images ({mine.name}) and "
            f"{info.name} has {info.input_shape[0]} channels: its first layer's weights cannot be used"
        )
    init_seed = derived_seed(seed, "transfer-head")
    target = build_model(ticket.model, tuple(info.input_shape), info.num_classes, seed=init_seed)
    fresh = target.state_dict()
    head = tuple(target.structure().head)
    in_head = lambda key: any(key.startswith(p + ".") for p in head)  # noqa: E731
    mismatched = [k for k, v in ticket.state.items() if k in fresh and tuple(v.shape) != tuple(fresh[k].shape)]
    blocking = [k for k in mismatched if not in_head(k)]
    if blocking:
        k = blocking[0]
        raise DatasetMoveError(
            f"{k!r} has shape {tuple(ticket.state[k].shape)} for {mine.name} (input {tuple(mine.input_shape)}) "
            f"but {tuple(fresh[k].shape)} for {info.name} (input {tuple(info.input_shape)}): a {ticket.model} "
            "ticket moves only between datasets whose inputs fit the same weights"
        )
    state = {k: v.clone() for k, v in ticket.state.items()}
    mask = {k: v.clone() for k, v in ticket.mask.items()}
    dense = None if ticket.dense is None else {k: v.clone() for k, v in ticket.dense.items()}
    excluded = set(target.default_excluded())
    g = torch.Generator().manual_seed(init_seed)
    replaced = []
    for k in mismatched:
        state[k] = fresh[k].clone()
        replaced.append(k)
        if k in mask:
            old = ticket.mask[k]
            if k in excluded:
                m = torch.ones_like(fresh[k], dtype=old.dtype)
            else:
                kept = round(float(old.float().mean()) * fresh[k].numel())
                order = torch.randperm(fresh[k].numel(), generator=g)
                m = torch.zeros(fresh[k].numel(), dtype=old.dtype)
                m[order[:kept]] = 1
                m = m.view(fresh[k].shape)
            mask[k] = m
            if dense is not None:
                dense[k] = fresh[k].clone()
            state[k] = fresh[k] * m.to(fresh[k].dtype)
    result = Ticket(ticket.model, info, state, mask, ticket.rewind_step, ticket.rewind, dict(ticket.protocol),
                    _provenance(ticket, info, head=replaced, seed=seed), list(ticket.warnings), dense)
    return result


def _provenance(ticket: Ticket, info: DatasetInfo, head: list[str] | None, seed: int | None = None) -> dict:
    mine = ticket.dataset
    what = "weights and masks kept" if head is None else (
        f"new output layer ({mine.num_classes} -> {info.num_classes} classes, seeded, same density)")
    out = {
        "method": "dataset transfer",
        "description": f"a {ticket.model} ticket of {mine.name} moved to {info.name}: {what}",
        "from_dataset": mine.to_dict(),
        "replaced": head or [],
        "from": copy.deepcopy(ticket.provenance),
    }
    if seed is not None:
        out["head_seed"] = seed
    # The weights are the source's: its seeds stay this ticket's (a baseline made --like it, training).
    for key in ("seed", "data_seed"):
        if ticket.provenance.get(key) is not None:
            out[key] = ticket.provenance[key]
    return out


__all__ = ["DatasetMoveError", "to_dataset"]
