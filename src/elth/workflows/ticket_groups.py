"""Training many tickets at once: tickets of one model and rewind step, trained with one protocol
on one dataset, go through `train_fused` in groups.

Each ticket's training lands where `train_ticket(..., root=root)` puts it
(`root/train-<hash>/train/`, same files), so `train_ticket` afterwards finds it finished, an
interrupted group resumes from its members' checkpoints, and a ticket already trained is left out.
"""
from __future__ import annotations

import os

import torch

from elth.files import TRAIN_DIR
from elth.tickets import Ticket, TicketError, check_dataset
from elth.training import Protocol, TrainingDiverged, TrainResult
from elth.training.fused import Member, train_fused
from elth.workflows.ticket_training import ticket_run_dir, train_ticket


def train_tickets(
    tickets: list[tuple[Ticket, int]],
    data,
    protocol: Protocol,
    *,
    group_size: int,
    root: str | os.PathLike,
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
            if len(chunk) == 1:
                ticket, seed = tickets[chunk[0]]
                try:
                    results[chunk[0]] = train_ticket(ticket, data, protocol, data_seed=seed, root=root, device=device,
                                                     progress=progress, precision=precision)
                except TrainingDiverged as e:
                    results[chunk[0]] = e
                continue
            members = [
                Member(
                    tickets[i][0].build(device if device is not None else "cpu"), tickets[i][1], tickets[i][0].mask,
                    ticket_run_dir(tickets[i][0], data, protocol, tickets[i][1], root, precision) / TRAIN_DIR,
                )
                for i in chunk
            ]
            trained = train_fused(
                members, data, protocol, start_step=rewind_step, precision=precision, device=device, progress=progress,
                desc=f"{model} x{len(chunk)} tickets fused",
            )
            for i, result in zip(chunk, trained):
                results[i] = result
    return results
