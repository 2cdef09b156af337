"""Training checkpoints: one file per run directory, replaced atomically.

A checkpoint holds what continuing a run needs to be bit-identical to never stopping: model
weights and buffers, optimiser state (momentum buffers), the global step, the elapsed seconds,
and a `key` describing the run (model, protocol, data seed, mask, starting weights). A checkpoint
is only resumed by a run with the same key.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from elth.errors import ElthError
from elth.files import UnreadableTensorFileError, atomic_path, load_torch_file

FORMAT_VERSION = 1


class CheckpointError(ElthError):
    """A checkpoint that cannot be read or belongs to a different run."""


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write `payload` with torch.save, atomically (`files.atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"version": FORMAT_VERSION, **payload}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict | None:
    """The checkpoint at `path` (tensors on CPU), or None if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = load_torch_file(path, "checkpoint")
    except UnreadableTensorFileError as e:
        raise CheckpointError(f"{e}; remove it to start over") from None
    if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not an elth training checkpoint of format {FORMAT_VERSION}")
    return payload
