"""Training checkpoints: one file per run directory, replaced atomically.

A checkpoint holds what continuing a run needs to be bit-identical to never stopping: model
weights and buffers, optimiser state (momentum buffers), the global step, the elapsed seconds,
and a `key` describing the run (model, protocol, data seed, mask, starting weights). A checkpoint
is only resumed by a run with the same key.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from elth.errors import ElthError

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


class CheckpointError(ElthError):
    """A checkpoint that cannot be read or belongs to a different run."""


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write `payload` with torch.save to a temporary file, fsync it, then rename it onto `path`.

    With several ranks, a collective: rank 0 writes, every rank waits for it.
    """
    from elth.runs import rank_zero_writes

    path = Path(path)
    with rank_zero_writes() as writes:
        if writes:
            _write(path, payload)
    return path


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"version": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str | os.PathLike) -> dict | None:
    """The checkpoint at `path` (tensors on CPU), or None if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint ({e}); remove it to start over") from None
    if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not an elth training checkpoint of format {FORMAT_VERSION}")
    return payload


def tensors_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (first 16 hex digits) of names, shapes, dtypes and exact values."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        t = t.to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
