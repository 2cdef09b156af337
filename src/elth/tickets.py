"""The ticket: model name + dataset + rewind weights + mask + provenance, in one safetensors file.

File layout: tensors `state.<key>` (every parameter and buffer at the rewind point, pruned weights
zero) and `mask.<key>` (uint8 0/1, one per prunable weight); metadata key `elth` holds a JSON object
with format version, model, dataset, rewind point, protocol, provenance, sparsity and warnings.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from elth.data.base import DatasetInfo
from elth.errors import ElthError
from elth.models import ElasticModel, build_model
from elth.sparsity.masks import Mask, apply_mask, layer_stats, sparsity

FORMAT = "elth-ticket"
FORMAT_VERSION = 1


class TicketError(ElthError, ValueError):
    """A ticket file that cannot be used (missing, truncated, corrupted or mismatched)."""


@dataclass
class Ticket:
    model: str
    dataset: DatasetInfo
    state: dict[str, torch.Tensor]
    mask: Mask
    rewind_step: int = 0
    rewind: str = "0"
    protocol: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        return sparsity(self.mask)

    def layer_stats(self) -> dict[str, dict]:
        return layer_stats(self.mask)

    def build(self, device: torch.device | str = "cpu") -> ElasticModel:
        """The model with the rewind weights loaded and the mask applied."""
        model = build_model(self.model, self.dataset.input_shape, self.dataset.num_classes, seed=None)
        model.load_state_dict(self.state)
        model.to(device)
        apply_mask(model, {k: v.to(device) for k, v in self.mask.items()})
        return model

    def metadata(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.model,
            "dataset": self.dataset.to_dict(),
            "rewind": self.rewind,
            "rewind_step": self.rewind_step,
            "protocol": self.protocol,
            "provenance": self.provenance,
            "sparsity": self.sparsity,
            "layer_sparsity": {k: v["sparsity"] for k, v in self.layer_stats().items()},
            "warnings": self.warnings,
        }


def from_model(
    model: ElasticModel,
    dataset: DatasetInfo,
    mask: Mask,
    *,
    rewind_step: int = 0,
    rewind: str = "0",
    protocol: dict | None = None,
    provenance: dict | None = None,
    warnings: list[str] | None = None,
) -> Ticket:
    """A ticket from a model's current weights (taken as the rewind weights) and a mask."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    mask = {k: v.detach().to("cpu", torch.bool) for k, v in mask.items()}
    for k, m in mask.items():
        state[k] = state[k] * m.to(state[k].dtype)
    return Ticket(
        model.name, dataset, state, mask, rewind_step, rewind,
        protocol or {}, provenance or {}, list(warnings or []),
    )


def save_ticket(ticket: Ticket, path: str | os.PathLike) -> Path:
    """Validate and write atomically (temporary file in the same directory, then rename)."""
    from safetensors.torch import save_file

    validate(ticket)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"state.{k}": v.contiguous() for k, v in ticket.state.items()}
    tensors.update({f"mask.{k}": v.to(torch.uint8).contiguous() for k, v in ticket.mask.items()})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"elth": json.dumps(ticket.metadata())})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_ticket(path: str | os.PathLike) -> Ticket:
    """Read and validate a ticket; any problem is one `TicketError` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise TicketError(f"{path}: no such ticket file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get("elth")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for truncated/corrupted files
        raise TicketError(f"{path}: not a readable ticket file (truncated or corrupted?): {e}") from None
    if raw_meta is None:
        raise TicketError(f"{path}: safetensors file without elth ticket metadata")
    try:
        meta = json.loads(raw_meta)
        if meta.get("format") != FORMAT:
            raise KeyError("format")
        if int(meta.get("version", 0)) > FORMAT_VERSION:
            raise TicketError(f"{path}: ticket format version {meta['version']} is newer than this elth reads")
        ticket = Ticket(
            model=meta["model"],
            dataset=DatasetInfo.from_dict(meta["dataset"]),
            state={k[6:]: v for k, v in tensors.items() if k.startswith("state.")},
            mask={k[5:]: v.bool() for k, v in tensors.items() if k.startswith("mask.")},
            rewind_step=int(meta.get("rewind_step", 0)),
            rewind=str(meta.get("rewind", "0")),
            protocol=meta.get("protocol", {}),
            provenance=meta.get("provenance", {}),
            warnings=list(meta.get("warnings", [])),
        )
        masks_raw = {k[5:]: v for k, v in tensors.items() if k.startswith("mask.")}
    except TicketError:
        raise
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise TicketError(f"{path}: ticket metadata is incomplete or malformed ({e})") from None
    for k, v in masks_raw.items():
        if v.dtype != torch.uint8 or bool(((v != 0) & (v != 1)).any()):
            raise TicketError(f"{path}: mask of {k!r} is not binary")
    try:
        validate(ticket)
    except TicketError as e:
        raise TicketError(f"{path}: {e}") from None
    return ticket


def validate(ticket: Ticket) -> None:
    """Keys and shapes against the model, binary mask, pruned weights zero."""
    try:
        model = build_model(ticket.model, ticket.dataset.input_shape, ticket.dataset.num_classes, seed=None)
    except ValueError as e:
        raise TicketError(str(e)) from None
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(ticket.state))
    unexpected = sorted(set(ticket.state) - set(expected))
    if missing or unexpected:
        raise TicketError(
            f"weights do not match {ticket.model}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for k, shape in expected.items():
        if ticket.state[k].shape != shape:
            raise TicketError(f"{k}: shape {tuple(ticket.state[k].shape)} but {ticket.model} has {tuple(shape)}")
    prunable = set(model.prunable_names())
    if set(ticket.mask) != prunable:
        raise TicketError(
            f"mask does not cover the prunable weights of {ticket.model}: "
            f"missing {sorted(prunable - set(ticket.mask))[:5]}, unexpected {sorted(set(ticket.mask) - prunable)[:5]}"
        )
    for k, m in ticket.mask.items():
        if m.dtype != torch.bool:
            raise TicketError(f"mask of {k!r} is not boolean")
        if m.shape != expected[k]:
            raise TicketError(f"mask of {k!r} has shape {tuple(m.shape)}, weight has {tuple(expected[k])}")
        if bool((ticket.state[k][~m] != 0).any()):
            raise TicketError(f"weights of {k!r} are non-zero where the mask prunes them")
