"""Masks to and from `torch.nn.utils.prune`'s form, so a ticket works in plain PyTorch code.

`torch.nn.utils.prune` keeps a pruned weight as a parameter `<name>_orig` and a buffer
`<name>_mask`, and recomputes `<name> = <name>_orig * <name>_mask` before every forward. Export puts
a model in that form (`prune.custom_from_mask` per masked weight); import reads the masks back and
makes the pruning permanent (`prune.remove`), leaving an ordinary model and an elth mask.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from elth.data.base import DatasetInfo
from elth.errors import ElthError
from elth.masks import Mask, prunable_names
from elth.models import ElasticModel
from elth.tickets import Ticket, from_model

ORIG, MASK = "_orig", "_mask"


class TorchPruneError(ElthError, ValueError):
    """A model or state dict that is not in the form `torch.nn.utils.prune` produces."""


def _split(name: str) -> tuple[str, str]:
    module, _, param = name.rpartition(".")
    return module, param


def to_torch_prune(model: nn.Module, mask: Mask) -> nn.Module:
    """Put `model` in place into `torch.nn.utils.prune` form with `mask`; returns `model`.

    Every masked weight becomes `weight_orig` (parameter, pruned entries zero) and `weight_mask`
    (float 0/1 buffer). Masks of excluded layers (all ones) are attached too, so the state dict
    has the same form for every layer a ticket covers.
    """
    modules = dict(model.named_modules())
    for name, m in mask.items():
        module_name, param = _split(name)
        module = modules.get(module_name)
        if module is None or not isinstance(getattr(module, param, None), torch.Tensor):
            raise TorchPruneError(f"the model has no weight {name!r} to attach a mask to")
        if hasattr(module, param + MASK):
            raise TorchPruneError(f"{name!r} is already in torch.nn.utils.prune form")
        weight = getattr(module, param)
        if m.shape != weight.shape:
            raise TorchPruneError(f"mask of {name!r} has shape {tuple(m.shape)}, weight has {tuple(weight.shape)}")
        with torch.no_grad():
            weight.mul_(m.to(weight.device, weight.dtype))
        prune.custom_from_mask(module, param, m.to(weight.device, weight.dtype))
    return model


def from_torch_prune(model: nn.Module) -> Mask:
    """Make the pruning of `model` permanent (in place) and return its masks as an elth mask.

    Weights of prunable layers that carry no `torch.nn.utils.prune` mask get an all-ones mask.
    """
    mask: Mask = {}
    modules = dict(model.named_modules())
    for name in prunable_names(model):
        module_name, param = _split(name)
        module = modules[module_name]
        buf = getattr(module, param + MASK, None)
        if buf is None:
            mask[name] = torch.ones_like(getattr(module, param), dtype=torch.bool, device="cpu")
            continue
        mask[name] = _binary(buf, name).cpu()
        prune.remove(module, param)
    return mask


def split_pruned_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Mask]:
    """A state dict saved from a `torch.nn.utils.prune` model -> (plain state dict, masks found).

    `<w>_orig` and `<w>_mask` become `<w>` (their product) and a boolean mask for `<w>`.
    """
    plain: dict[str, torch.Tensor] = {}
    mask: Mask = {}
    for key, value in state.items():
        if key.endswith(MASK):
            continue
        if key.endswith(ORIG):
            base = key[: -len(ORIG)]
            if base + MASK not in state:
                raise TorchPruneError(f"{key!r} has no matching {base + MASK!r}")
            m = _binary(state[base + MASK], base)
            plain[base] = value * m.to(value.device, value.dtype)
            mask[base] = m.cpu()
        else:
            plain[key] = value
    for key in state:
        if key.endswith(MASK) and key[: -len(MASK)] + ORIG not in state:
            raise TorchPruneError(f"{key!r} has no matching {key[: -len(MASK)] + ORIG!r}")
    return plain, mask


def ticket_to_torch_prune(ticket: Ticket, device: torch.device | str = "cpu") -> ElasticModel:
    """The ticket's model at its rewind weights, in `torch.nn.utils.prune` form."""
    model = ticket.build(device)
    return to_torch_prune(model, {k: v.to(device) for k, v in ticket.mask.items()})  # type: ignore[return-value]


def ticket_from_torch_prune(model: ElasticModel, dataset: DatasetInfo, **ticket_fields) -> Ticket:
    """A ticket from an elth model in `torch.nn.utils.prune` form (its current weights become the
    rewind weights). The model is left with its pruning made permanent. `ticket_fields` go to
    `elth.tickets.from_model` (rewind_step, rewind, protocol, provenance, warnings).

    The ticket has no dense weights: once the pruning is permanent the pruned entries are zero
    (and an exported ticket's `weight_orig` is zero there too), so there are no rewind values to keep.
    """
    mask = from_torch_prune(model)
    return from_model(model, dataset, mask, keep_dense=False, **ticket_fields)


def _binary(buf: torch.Tensor, name: str) -> torch.Tensor:
    if bool(((buf != 0) & (buf != 1)).any()):
        raise TorchPruneError(f"the torch.nn.utils.prune mask of {name!r} is not binary")
    return buf != 0
