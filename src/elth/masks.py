"""Masks: one boolean tensor per prunable weight (every conv and linear weight of the model).

Excluded layers (by default the output layer of VGGs and MLPs) are still in the mask, all ones:
they count in the totals, as in the paper's framework, but are never pruned.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from elth.errors import ElthError

Mask = dict[str, torch.Tensor]


class UnknownLayerError(ElthError, ValueError):
    """A layer name that is not one of the model's prunable weights."""


class PruningError(ElthError, ValueError):
    """Pruning asked for more weights than remain eligible."""


def prunable_names(model: nn.Module) -> list[str]:
    """Every conv/linear weight of `model`, in model order."""
    if hasattr(model, "prunable_names"):
        return model.prunable_names()
    return [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def excluded_names(model: nn.Module, exclude: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The prunable weights kept dense, in model order.

    `exclude=None` means the model's defaults (the output layer of VGGs and MLPs, nothing for
    ResNets); a list replaces the defaults (an empty list prunes every layer). Entries are weight
    names or module names ('fc' means 'fc.weight').
    """
    names = prunable_names(model)
    if exclude is None:
        excluded = set(getattr(model, "default_excluded", lambda: [])())
    else:
        excluded = set()
        for e in exclude:
            e = e if e.endswith(".weight") else e + ".weight"
            if e not in names:
                raise UnknownLayerError(
                    f"cannot exclude {e!r}: {getattr(model, 'name', 'the model')} has no such prunable weight "
                    f"(its prunable weights are {', '.join(names[:4])}, ...)"
                )
            excluded.add(e)
    return [n for n in names if n in excluded]


def eligible_names(model: nn.Module, exclude: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The prunable weights that pruning may touch: all but `excluded_names(model, exclude)`."""
    excluded = set(excluded_names(model, exclude))
    return [n for n in prunable_names(model) if n not in excluded]


def full_mask(model: nn.Module) -> Mask:
    params = dict(model.named_parameters())
    # Contiguous even for channels_last weights: masks are indexed through flat views.
    return {
        n: torch.ones_like(params[n], dtype=torch.bool, memory_format=torch.contiguous_format)
        for n in prunable_names(model)
    }


def count(mask: Mask) -> tuple[int, int]:
    """(kept, total) over all mask tensors."""
    kept = sum(int(torch.count_nonzero(m)) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    return kept, total


def sparsity(mask: Mask) -> float:
    kept, total = count(mask)
    return 1.0 - kept / total if total else 0.0


def layer_stats(mask: Mask) -> dict[str, dict]:
    out = {}
    for n, m in mask.items():
        kept = int(torch.count_nonzero(m))
        out[n] = {"numel": m.numel(), "kept": kept, "sparsity": 1.0 - kept / m.numel()}
    return out


def collapsed_layers(mask: Mask) -> list[str]:
    """Layers left with no weights at all."""
    return [n for n, m in mask.items() if not bool(m.any())]


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights of `model` in place."""
    params = dict(model.named_parameters())
    for n, m in mask.items():
        params[n].mul_(m.to(params[n].device, params[n].dtype))


def prune_count(remaining: int, fraction: float) -> int:
    """Weights one IMP level removes: ceil(fraction x remaining)."""
    return math.ceil(fraction * remaining)


def imp_kept_counts(total: int, fraction: float, levels: int) -> list[int]:
    """Weights kept at IMP levels 0..levels when each level removes ceil(fraction x remaining).

    `remaining` counts every prunable weight still alive, excluded layers included (as in the
    paper's framework), so the sparsity after L levels is 1 - (1 - fraction)^L up to rounding.
    """
    kept = [total]
    for _ in range(levels):
        kept.append(kept[-1] - prune_count(kept[-1], fraction))
    return kept


def magnitude_prune(
    weights: dict[str, torch.Tensor], mask: Mask, fraction: float, names: list[str]
) -> Mask:
    """One IMP level: remove ceil(fraction x remaining) of the smallest-magnitude weights among `names`.

    `remaining` counts all of `mask` (excluded layers too); only `names` lose weights. Weights that
    are not finite (a diverged training) are refused rather than ranked.
    """
    for n in names:
        if not bool(torch.isfinite(weights[n][mask[n].to(weights[n].device)]).all()):
            raise PruningError(f"the trained weights of {n} are not all finite (the training diverged): "
                               "magnitudes that are NaN or infinite cannot be ranked")
    kept, _ = count(mask)
    n_prune = prune_count(kept, fraction)
    eligible = sum(int(torch.count_nonzero(mask[n])) for n in names)
    if n_prune > eligible:
        raise PruningError(
            f"cannot prune {n_prune} more weights: only {eligible} remain outside the excluded layers"
        )
    return prune_lowest({n: weights[n].abs() for n in names}, mask, n_prune, names)


def count_for_sparsity(total: int, target_sparsity: float) -> int:
    """Kept weights that give `target_sparsity` over `total` (rounded to the nearest weight)."""
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {target_sparsity}")
    return total - round(target_sparsity * total)


def prune_lowest(scores: dict[str, torch.Tensor], mask: Mask, n_prune: int, names: list[str]) -> Mask:
    """A new mask with the `n_prune` lowest-scoring still-unpruned weights among `names` removed.

    Ties are broken by position (earlier layers, lower flat index first), so the result is
    deterministic. Layers not in `names` are copied unchanged.
    """
    new = {n: m.clone() for n, m in mask.items()}
    if n_prune <= 0:
        return new
    flat_scores, flat_index = [], []
    for n in names:
        alive = mask[n].flatten().nonzero().squeeze(1)
        flat_scores.append(scores[n].detach().flatten().cpu()[alive.cpu()].double())
        flat_index.append(alive.cpu())
    all_scores = torch.cat(flat_scores)
    if n_prune > all_scores.numel():
        raise PruningError(f"cannot prune {n_prune} weights: only {all_scores.numel()} remain eligible")
    # Stable sort: among equal scores, the earlier position is pruned first.
    order = torch.sort(all_scores, stable=True).indices[:n_prune]
    offsets = torch.tensor([0] + [s.numel() for s in flat_scores]).cumsum(0)
    for i, n in enumerate(names):
        sel = order[(order >= offsets[i]) & (order < offsets[i + 1])] - offsets[i]
        if sel.numel():
            flat = new[n].view(-1)
            flat[flat_index[i][sel].to(flat.device)] = False
    return new
