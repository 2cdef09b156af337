"""Evaluate a ticket: train it from its rewind step to the end of a protocol with its mask fixed.

This is how every ticket is judged, however it was made (IMP, an elastic transformation, a pruning
method). With `root`, the training lives in `root/train-<hash>/` where the hash covers the ticket's
content, the dataset, the protocol and the data seed: training the same ticket again costs nothing,
and an interrupted training resumes. `train_tickets` trains many at once: tickets of one model and
rewind step share fused groups (`elth.training.train_group`), each training where `train_ticket`
would put it; `train_ticket` is a group of one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from elth.files import CHECKPOINT_FILE, TRAIN_DIR
from elth.runs import RunKey
from elth.tickets import Ticket, TicketError, check_dataset
from elth.training import Member, Protocol, TrainingDiverged, TrainResult, train_group
from elth.training.checkpoint import load_checkpoint


@dataclass(frozen=True)
class TrainKey(RunKey):
    """What determines the result of training a ticket (`root/train-<hash>`)."""

    prefix: ClassVar[str] = "train"
    ticket: str  # the ticket's content hash
    model: str
    dataset: dict
    protocol: dict
    data_seed: int
    precision: str


def ticket_run_dir(
    ticket: Ticket, data, protocol: Protocol, data_seed: int, root: str | os.PathLike, precision: str = "fp32"
) -> Path:
    """`root/train-<hash>`: where `train_ticket(..., root=root)` trains `ticket`."""
    return TrainKey(ticket.content_hash(), ticket.model, data.info.to_dict(), protocol.to_dict(), data_seed,
                    precision).directory(root)


def train_ticket(
    ticket: Ticket,
    data,
    protocol: Protocol,
    *,
    data_seed: int = 0,
    root: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> TrainResult:
    """Train `ticket` from its rewind step to the end of `protocol`, pruned weights held at zero."""
    [result] = train_tickets([(ticket, data_seed)], data, protocol, group_size=1, root=root, device=device,
                             progress=progress, precision=precision)
    if isinstance(result, TrainingDiverged):
        raise result
    return result


def train_tickets(
    tickets: list[tuple[Ticket, int]],
    data,
    protocol: Protocol,
    *,
    group_size: int,
    root: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> list[TrainResult | TrainingDiverged]:
    """Train every (ticket, data seed) of `tickets`, at most `group_size` at once as one fused
    network (tickets of one model and rewind step share a group); results in the given order (a
    training that diverged: the `TrainingDiverged` that `train_ticket` would raise)."""
    if group_size < 1:
        raise ValueError(f"group size must be at least 1, got {group_size}")
    total = protocol.total_steps(data.iterations_per_epoch(protocol.batch_size))
    for ticket, _ in tickets:
        check_dataset(ticket, data.info)
        if ticket.rewind_step >= total:
            raise TicketError(
                f"the ticket's rewind step {ticket.rewind_step} is not before the end of the protocol "
                f"({protocol.length} = {total} steps on {data.info.name}): nothing to train"
            )
    results: list[TrainResult | TrainingDiverged | None] = [None] * len(tickets)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (ticket, _) in enumerate(tickets):
        groups.setdefault((ticket.model, ticket.rewind_step), []).append(i)
    for (model, rewind_step), indices in groups.items():
        for start in range(0, len(indices), group_size):
            chunk = indices[start : start + group_size]
            members = [
                Member(ticket.build(device if device is not None else "cpu"), seed, ticket.mask,
                       None if root is None else ticket_run_dir(ticket, data, protocol, seed, root, precision) / TRAIN_DIR)
                for ticket, seed in (tickets[i] for i in chunk)
            ]
            if len(chunk) == 1:
                desc = f"{model} ticket ({100 * tickets[chunk[0]][0].sparsity:.1f}% sparse)"
            else:
                desc = f"{model} x{len(chunk)} tickets fused"
            trained = train_group(members, data, protocol, start_step=rewind_step, precision=precision, device=device,
                                  progress=progress, desc=desc)
            for i, result in zip(chunk, trained):
                results[i] = result
    return results


def trained_state(
    ticket: Ticket,
    data,
    protocol: Protocol,
    *,
    data_seed: int = 0,
    root: str | os.PathLike,
    precision: str = "fp32",
) -> dict[str, torch.Tensor]:
    """The final weights and buffers (on CPU) of a finished `train_ticket(..., root=root)` run."""
    path = ticket_run_dir(ticket, data, protocol, data_seed, root, precision) / TRAIN_DIR / CHECKPOINT_FILE
    ckpt = load_checkpoint(path)
    if ckpt is None or ckpt.get("result") is None:
        raise TicketError(f"{path.parent}: no finished training of this ticket (run train_ticket first)")
    return ckpt["model"]
