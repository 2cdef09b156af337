"""Masks: one boolean tensor per prunable weight (every conv and linear weight of the model).

Excluded layers (by default the output layer of VGGs and MLPs) are still in the mask, all ones:
they count in the totals, as in the paper's framework, but are never pruned.
"""
from __future__ import annotations

import math

import torch
from torch import nn

Mask = dict[str, torch.Tensor]


def prunable_names(model: nn.Module) -> list[str]:
    """Every conv/linear weight of `model`, in model order."""
    if hasattr(model, "prunable_names"):
        return model.prunable_names()
    return [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def eligible_names(model: nn.Module, exclude: list[str] | None = None) -> list[str]:
    """The prunable weights that pruning may touch: all minus the model's defaults minus `exclude`.

    `exclude` entries are weight names or module names ('fc' means 'fc.weight').
    """
    names = prunable_names(model)
    excluded = set(getattr(model, "default_excluded", lambda: [])()) if exclude is None else set()
    for e in exclude or []:
        e = e if e.endswith(".weight") else e + ".weight"
        if e not in names:
            raise ValueError(f"cannot exclude {e!r}: the model has no such prunable weight")
        excluded.add(e)
    return [n for n in names if n not in excluded]


def full_mask(model: nn.Module) -> Mask:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable_names(model)}


def count(mask: Mask) -> tuple[int, int]:
    """(kept, total) over all mask tensors."""
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    return kept, total


def sparsity(mask: Mask) -> float:
    kept, total = count(mask)
    return 1.0 - kept / total if total else 0.0


def layer_stats(mask: Mask) -> dict[str, dict]:
    out = {}
    for n, m in mask.items():
        kept = int(m.sum())
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
        flat_scores.append(scores[n].detach().flatten()[alive].double().cpu())
        flat_index.append(alive.cpu())
    all_scores = torch.cat(flat_scores)
    if n_prune > all_scores.numel():
        raise ValueError(f"cannot prune {n_prune} weights: only {all_scores.numel()} remain eligible")
    # Stable sort: among equal scores, the earlier position is pruned first.
    order = torch.sort(all_scores, stable=True).indices[:n_prune]
    offsets = torch.tensor([0] + [s.numel() for s in flat_scores]).cumsum(0)
    for i, n in enumerate(names):
        sel = order[(order >= offsets[i]) & (order < offsets[i + 1])] - offsets[i]
        if sel.numel():
            flat = new[n].view(-1)
            flat[flat_index[i][sel].to(flat.device)] = False
    return new
