"""Evaluate a ticket: train it from its rewind step to the end of a protocol with its mask fixed.

This is how every ticket is judged, however it was made (IMP, an elastic transformation, a pruning
method). With `root`, the training lives in `root/train-<hash>/` where the hash covers the ticket's
content, the dataset, the protocol and the data seed: training the same ticket again costs nothing,
and an interrupted training resumes.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from elth.files import CHECKPOINT_FILE, TRAIN_DIR
from elth.runs import run_dir
from elth.tickets import Ticket, TicketError, check_dataset
from elth.training import Protocol, TrainResult, train
from elth.training.checkpoint import load_checkpoint


def train_ticket_hparams(ticket: Ticket, data, protocol: Protocol, data_seed: int, precision: str = "fp32") -> dict:
    """Everything that determines the result of training `ticket`."""
    return {
        "ticket": ticket.content_hash(),
        "model": ticket.model,
        "dataset": data.info.to_dict(),
        "protocol": protocol.to_dict(),
        "data_seed": data_seed,
        "precision": precision,
    }


def ticket_run_dir(
    ticket: Ticket, data, protocol: Protocol, data_seed: int, root: str | os.PathLike, precision: str = "fp32"
) -> Path:
    """`root/train-<hash>`: where `train_ticket(..., root=root)` trains `ticket`."""
    return Path(run_dir(root, "train", train_ticket_hparams(ticket, data, protocol, data_seed, precision)))


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
    check_dataset(ticket, data.info)
    total = protocol.total_steps(data.iterations_per_epoch(protocol.batch_size))
    if ticket.rewind_step >= total:
        raise TicketError(
            f"the ticket's rewind step {ticket.rewind_step} is not before the end of the protocol "
            f"({protocol.length} = {total} steps on {data.info.name}): nothing to train"
        )
    out_dir = None
    if root is not None:
        out_dir = ticket_run_dir(ticket, data, protocol, data_seed, root, precision) / TRAIN_DIR
    model = ticket.build(device if device is not None else "cpu")
    return train(
        model, data, protocol, data_seed=data_seed, start_step=ticket.rewind_step, mask=ticket.mask,
        out_dir=out_dir, precision=precision, device=device, progress=progress,
        desc=f"{ticket.model} ticket ({100 * ticket.sparsity:.1f}% sparse)",
    )


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
