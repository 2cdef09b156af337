"""The ticket: model name + dataset + rewind weights + mask + provenance, in one safetensors file.

File layout: tensors `state.<key>` (every parameter and buffer at the rewind point, pruned weights
zero), `mask.<key>` (uint8 0/1, one per prunable weight) and, optionally, `dense.<key>` (the rewind
values of every prunable weight before masking, so that another mask over the same weights selects
real values); metadata key `elth` holds a JSON object with format version, model, dataset, rewind
point, protocol, provenance, sparsity, warnings and a SHA-256 checksum of the tensors (so a corrupted
file is caught, not silently used). Version 1 files have no dense weights and load unchanged.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import safetensors.torch
import torch
from safetensors import safe_open

from elth.data.base import DatasetInfo
from elth.errors import ElthError
from elth.files import atomic_path, json_text, refuse_json_constant, tensors_hash
from elth.limits import check_seed, is_int, is_real
from elth.masks import Mask, apply_mask, layer_stats, sparsity
from elth.models import ElasticModel, build_model
from elth.runs import hparams_hash
from elth.training.protocol import Protocol, parse_steps

FORMAT = "elth-ticket"
FORMAT_VERSION = 2  # 2: optional `dense.<key>` tensors
#: Metadata every ticket file must carry.
REQUIRED_METADATA = (
    "format", "version", "model", "dataset", "rewind", "rewind_step", "protocol", "provenance",
    "sparsity", "layer_sparsity", "warnings", "checksum",
)


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
    #: Rewind values of the prunable weights before masking (keys and shapes of `mask`), or None.
    dense: dict[str, torch.Tensor] | None = None

    @property
    def has_dense(self) -> bool:
        return self.dense is not None

    @property
    def sparsity(self) -> float:
        return sparsity(self.mask)

    def layer_stats(self) -> dict[str, dict]:
        return layer_stats(self.mask)

    def build(self, device: torch.device | str = "cpu") -> ElasticModel:
        """The model with the rewind weights loaded and the mask applied."""
        model = build_model(self.model, self.dataset.input_shape, self.dataset.num_classes, seed=0)
        model.load_state_dict(self.state)
        model.to(device)
        apply_mask(model, {k: v.to(device) for k, v in self.mask.items()})
        return model

    def file_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors as stored in the file (CPU, contiguous; masks as uint8)."""
        tensors = self._training_tensors()
        if self.dense is not None:
            tensors.update({f"dense.{k}": v.detach().cpu().contiguous() for k, v in self.dense.items()})
        return tensors

    def _training_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"state.{k}": v.detach().cpu().contiguous() for k, v in self.state.items()}
        tensors.update({f"mask.{k}": v.detach().cpu().to(torch.uint8).contiguous() for k, v in self.mask.items()})
        return tensors

    def checksum(self) -> str:
        """SHA-256 of every tensor of the file, dense weights included (what the file's metadata records)."""
        return tensors_hash(self.file_tensors())

    def content_hash(self) -> str:
        """A short hash of everything that determines how this ticket trains (not its provenance).

        Training uses `state` and `mask` only, so the dense weights are left out: a ticket hashes the
        same with or without them (and as it did before tickets carried them).
        """
        return hparams_hash({
            "model": self.model,
            "dataset": self.dataset.to_dict(),
            "rewind_step": self.rewind_step,
            "tensors": tensors_hash(self._training_tensors()),
        })

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
            "checksum": self.checksum(),
        }

    def summary(self) -> dict:
        """What `elth inspect --json` prints: identity, provenance and sparsity per layer."""
        layers = self.layer_stats()
        kept = sum(v["kept"] for v in layers.values())
        total = sum(v["numel"] for v in layers.values())
        return {
            "model": self.model,
            "dataset": self.dataset.to_dict(),
            "rewind": self.rewind,
            "rewind_step": self.rewind_step,
            "protocol": self.protocol,
            "provenance": self.provenance,
            "sparsity": self.sparsity,
            "kept": kept,
            "prunable": total,
            "layers": layers,
            "has_dense": self.has_dense,
            "warnings": self.warnings,
            "content_hash": self.content_hash(),
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
    keep_dense: bool = True,
) -> Ticket:
    """A ticket from a model's current weights (taken as the rewind weights) and a mask.

    `keep_dense`: keep the model's prunable weights as they are, before masking, as the ticket's
    `dense` weights (so the ticket is a mask over real rewind values, as in the paper's framework).
    """
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    mask = {k: v.detach().to("cpu", torch.bool) for k, v in mask.items()}
    dense = {k: state[k] for k in mask} if keep_dense else None
    for k, m in mask.items():
        state[k] = state[k] * m.to(state[k].dtype)
    return Ticket(
        model.name, dataset, state, mask, rewind_step, rewind,
        protocol or {}, provenance or {}, list(warnings or []), dense,
    )


def save_ticket(ticket: Ticket, path: str | os.PathLike) -> Path:
    """Validate and write atomically: a crash leaves either no file or the old one, never half a ticket."""
    validate(ticket)
    path = Path(path)
    tensors = ticket.file_tensors()
    meta = ticket.metadata()
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata={"elth": json_text(meta)})
    return path


def load_ticket(path: str | os.PathLike) -> Ticket:
    """Read and validate a ticket; any problem is one `TicketError` naming the file."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(path.glob("**/*.safetensors"))[:3]
        hint = f"; ticket files in it: {', '.join(str(p) for p in inside)}" if inside else ""
        raise TicketError(f"{path}: is a directory, not a ticket file{hint}")
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
        meta = json.loads(raw_meta, parse_constant=refuse_json_constant)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TicketError(f"{path}: metadata is not an elth ticket's")
        missing = [k for k in REQUIRED_METADATA if k not in meta]
        if missing:
            raise TicketError(f"{path}: ticket metadata lacks {', '.join(missing)}")
        wrong = _wrongly_typed(meta)
        if wrong:
            raise TicketError(f"{path}: ticket metadata has {wrong}")
        if meta["version"] > FORMAT_VERSION:
            raise TicketError(f"{path}: ticket format version {meta['version']} is newer than this elth reads")
        if tensors_hash(tensors) != meta["checksum"]:
            raise TicketError(f"{path}: tensor data does not match its checksum (the file is corrupted)")
        masks_raw = {k[5:]: v for k, v in tensors.items() if k.startswith("mask.")}
        for k, v in masks_raw.items():
            if v.dtype != torch.uint8 or bool(((v != 0) & (v != 1)).any()):
                raise TicketError(f"{path}: mask of {k!r} is not binary")
        ticket = Ticket(
            model=str(meta["model"]),
            dataset=DatasetInfo.from_dict(meta["dataset"]),
            state={k[6:]: v for k, v in tensors.items() if k.startswith("state.")},
            mask={k: v.bool() for k, v in masks_raw.items()},
            rewind_step=meta["rewind_step"],
            rewind=str(meta["rewind"]),
            protocol=dict(meta["protocol"]),
            provenance=dict(meta["provenance"]),
            warnings=[str(w) for w in meta["warnings"]],
            dense={k[6:]: v for k, v in tensors.items() if k.startswith("dense.")} or None,
        )
        unknown = [k for k in tensors if not k.startswith(("state.", "mask.", "dense."))]
        if unknown:
            raise TicketError(f"{path}: unexpected tensors {unknown[:5]}")
    except TicketError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise TicketError(f"{path}: ticket metadata is incomplete or malformed ({e})") from None
    try:
        validate(ticket)
    except TicketError as e:
        raise TicketError(f"{path}: {e}") from None
    if abs(meta["sparsity"] - ticket.sparsity) > 1e-9:
        raise TicketError(f"{path}: metadata says sparsity {meta['sparsity']} but the mask has {ticket.sparsity}")
    # The file stores tensors sorted by name; give them back in model order.
    expected, prunable = _shapes_of(ticket.model, ticket.dataset)
    ticket.state = {k: ticket.state[k] for k in expected}
    ticket.mask = {k: ticket.mask[k] for k in prunable}
    if ticket.dense is not None:
        ticket.dense = {k: ticket.dense[k] for k in prunable}
    return ticket


#: The type of each metadata field (a check, and the words naming it in an error).
_METADATA_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "format": (lambda v: isinstance(v, str), "a string"),
    "version": (is_int, "an integer"),
    "model": (lambda v: isinstance(v, str), "a string"),
    "dataset": (lambda v: isinstance(v, dict), "an object"),
    "rewind": (lambda v: isinstance(v, str), "a string"),
    "rewind_step": (is_int, "an integer"),
    "protocol": (lambda v: isinstance(v, dict), "an object"),
    "provenance": (lambda v: isinstance(v, dict), "an object"),
    "sparsity": (is_real, "a number"),
    "layer_sparsity": (lambda v: isinstance(v, dict) and all(is_real(x) for x in v.values()),
                       "an object of numbers"),
    "warnings": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "checksum": (lambda v: isinstance(v, str), "a string"),
}


def _wrongly_typed(meta: dict) -> str | None:
    """'<field> = <value>, not <type>' for the first metadata field of the wrong type, else None."""
    for key, (ok, what) in _METADATA_TYPES.items():
        if not ok(meta[key]):
            shown = json.dumps(meta[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return f"{key} = {shown}, not {what}"
    return None


@dataclass(frozen=True)
class ModelLayout:
    """What validation and mask bookkeeping need to know about a model, without its weights:
    tensor shapes and dtypes, prunable weights, default exclusions (same methods as the model)."""

    name: str
    shapes: dict[str, tuple[torch.Size, torch.dtype]]
    prunable: tuple[str, ...]
    excluded_by_default: tuple[str, ...]

    def prunable_names(self) -> list[str]:
        return list(self.prunable)

    def default_excluded(self) -> list[str]:
        return list(self.excluded_by_default)


@functools.lru_cache(maxsize=32)
def model_layout(model_name: str, input_shape: tuple[int, ...], num_classes: int) -> ModelLayout:
    """The layout of `model_name` for a dataset (built once per process and remembered)."""
    model = build_model(model_name, tuple(input_shape), num_classes, seed=0)
    return ModelLayout(
        model_name,
        {k: (v.shape, v.dtype) for k, v in model.state_dict().items()},
        tuple(model.prunable_names()),
        tuple(model.default_excluded()),
    )


def _shapes_of(model_name: str, info: DatasetInfo) -> tuple[dict[str, tuple[torch.Size, torch.dtype]], list[str]]:
    """(key -> (shape, dtype)) of the model's state dict, and its prunable weights."""
    try:
        layout = model_layout(model_name, tuple(info.input_shape), info.num_classes)
    except ValueError as e:
        raise TicketError(str(e)) from None
    return layout.shapes, list(layout.prunable)


def validate(ticket: Ticket) -> None:
    """Keys, shapes and dtypes against the model, binary mask covering every prunable weight,
    pruned weights zero, finite weights; dense weights (if any) finite and equal to the weights
    wherever the mask keeps them."""
    _validate_settings(ticket)
    expected, prunable_list = _shapes_of(ticket.model, ticket.dataset)
    missing = sorted(set(expected) - set(ticket.state))
    unexpected = sorted(set(ticket.state) - set(expected))
    if missing or unexpected:
        raise TicketError(
            f"weights do not match {ticket.model}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for k, (shape, dtype) in expected.items():
        t = ticket.state[k]
        if t.shape != shape:
            raise TicketError(f"{k}: shape {tuple(t.shape)} but {ticket.model} has {tuple(shape)}")
        if t.dtype.is_floating_point != dtype.is_floating_point:
            raise TicketError(f"{k}: dtype {t.dtype} but {ticket.model} has {dtype}")
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise TicketError(f"{k}: weights are not all finite")
    prunable = set(prunable_list)
    if set(ticket.mask) != prunable:
        raise TicketError(
            f"mask does not cover the prunable weights of {ticket.model}: "
            f"missing {sorted(prunable - set(ticket.mask))[:5]}, unexpected {sorted(set(ticket.mask) - prunable)[:5]}"
        )
    for k, m in ticket.mask.items():
        if m.dtype != torch.bool:
            raise TicketError(f"mask of {k!r} is not boolean")
        if m.shape != expected[k][0]:
            raise TicketError(f"mask of {k!r} has shape {tuple(m.shape)}, weight has {tuple(expected[k][0])}")
        if bool((ticket.state[k][~m.to(ticket.state[k].device)] != 0).any()):
            raise TicketError(f"weights of {k!r} are non-zero where the mask prunes them")
    if ticket.dense is not None:
        _validate_dense(ticket)


def _validate_settings(ticket: Ticket) -> None:
    """The numbers a ticket carries into training: rewind step, rewind point, protocol, recorded seeds."""
    if isinstance(ticket.rewind_step, bool) or not isinstance(ticket.rewind_step, int) or ticket.rewind_step < 0:
        raise TicketError(f"rewind step must be an integer >= 0, got {ticket.rewind_step!r}")
    try:
        parse_steps(ticket.rewind, 1)
        if ticket.protocol:
            Protocol.from_dict(ticket.protocol)
        for key in ("seed", "data_seed"):
            if ticket.provenance.get(key) is not None:
                check_seed(ticket.provenance[key], f"the recorded {key.replace('_', ' ')}")
    except (ElthError, TypeError) as e:
        raise TicketError(f"unusable settings: {e}") from None


def _validate_dense(ticket: Ticket) -> None:
    dense = ticket.dense
    if set(dense) != set(ticket.mask):
        raise TicketError(
            f"dense weights do not cover the masked weights: missing {sorted(set(ticket.mask) - set(dense))[:5]}, "
            f"unexpected {sorted(set(dense) - set(ticket.mask))[:5]}"
        )
    for k, m in ticket.mask.items():
        d, w = dense[k], ticket.state[k]
        if d.shape != m.shape:
            raise TicketError(f"dense weights of {k!r} have shape {tuple(d.shape)}, the mask has {tuple(m.shape)}")
        if d.dtype != w.dtype:
            raise TicketError(f"dense weights of {k!r} are {d.dtype}, the weights are {w.dtype}")
        if not bool(torch.isfinite(d).all()):
            raise TicketError(f"dense weights of {k!r} are not all finite")
        if bool(((d != w.to(d.device)) & m.to(d.device)).any()):
            raise TicketError(f"dense weights of {k!r} differ from the weights where the mask keeps them")


def check_dataset(ticket: Ticket, info: DatasetInfo) -> None:
    """A ticket trains on a dataset only if input shape and class count are those it was made for."""
    mine = ticket.dataset
    if tuple(info.input_shape) != tuple(mine.input_shape) or info.num_classes != mine.num_classes:
        raise TicketError(
            f"the ticket's {ticket.model} was made for {mine.name} (input {tuple(mine.input_shape)}, "
            f"{mine.num_classes} classes) and cannot train on {info.name} "
            f"(input {tuple(info.input_shape)}, {info.num_classes} classes)"
        )
