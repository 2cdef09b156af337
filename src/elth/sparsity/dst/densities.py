"""Layer densities for sparse masks: Erdos-Renyi-Kernel (ERK) and uniform.

Densities are fractions of each prunable weight tensor to keep, for a density over all prunable
weights; excluded layers (by default the output layer of MLPs and VGGs) are dense and count in the
total, as in IMP.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from elth.console import percent
from elth.errors import ElthError
from elth.masks import excluded_names, prunable_names

DISTRIBUTIONS = ("erk", "uniform")


class DSTError(ElthError, ValueError):
    """Dynamic sparse training settings that cannot work."""


def param_shapes(model: nn.Module) -> dict[str, torch.Size]:
    params = dict(model.named_parameters())
    return {n: params[n].shape for n in prunable_names(model)}


def _budget(model: nn.Module, density: float, exclude) -> tuple[dict[str, torch.Size], set[str], float]:
    """Prunable shapes, excluded names, and the weights left for the eligible layers."""
    if not 0.0 < density <= 1.0:
        raise DSTError(f"density must be in (0, 1], got {density}")
    shapes = param_shapes(model)
    excluded = set(excluded_names(model, None if exclude is None else list(exclude)))
    total = sum(s.numel() for s in shapes.values())
    budget = density * total - sum(shapes[n].numel() for n in excluded)
    if budget < 0:
        raise DSTError(
            f"the dense (excluded) layers alone hold more than {percent(density)} of the prunable weights; "
            "ask for a lower sparsity or exclude fewer layers"
        )
    return shapes, excluded, budget


def erk_densities(model: nn.Module, density: float, exclude=None) -> dict[str, float]:
    """Erdos-Renyi-Kernel density per prunable weight, for `density` over all of them.

    Layer l gets eps * (sum of its dims) / (product of its dims); eps makes the total match. A layer
    whose density would exceed 1 is dense and eps is recomputed without it. Excluded layers are
    dense and count in the total.
    """
    shapes, excluded, budget = _budget(model, density, exclude)
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    made_dense: set[str] = set()
    while True:
        sparse = [n for n in shapes if n not in excluded and n not in made_dense]
        if not sparse:
            return {n: 1.0 for n in shapes}
        budget_left = budget - sum(shapes[n].numel() for n in made_dense)
        eps = budget_left / sum(raw[n] * shapes[n].numel() for n in sparse)
        too_dense = [n for n in sparse if eps * raw[n] > 1.0]
        if not too_dense:
            out = {n: 1.0 for n in shapes}
            out.update({n: eps * raw[n] for n in sparse})
            return out
        made_dense |= set(too_dense)


def uniform_densities(model: nn.Module, density: float, exclude=None) -> dict[str, float]:
    """The same density in every eligible layer; excluded layers dense and counted in the total."""
    shapes, excluded, budget = _budget(model, density, exclude)
    eligible = sum(s.numel() for n, s in shapes.items() if n not in excluded)
    d = min(1.0, budget / eligible) if eligible else 1.0
    return {n: 1.0 if n in excluded else d for n in shapes}


def layer_densities(model: nn.Module, density: float, distribution: str = "erk", exclude=None) -> dict[str, float]:
    if distribution == "erk":
        return erk_densities(model, density, exclude)
    if distribution == "uniform":
        return uniform_densities(model, density, exclude)
    raise DSTError(f"unknown layer distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")


def kept_counts(densities: dict[str, float], shapes: dict[str, torch.Size], kept_total: int) -> dict[str, int]:
    """Weights kept per layer: floor(density x numel), the remainder to the largest fractions,
    so that the counts add up to `kept_total` (each within one weight of its density)."""
    numel = {n: shapes[n].numel() for n in shapes}
    exact = {n: min(1.0, densities[n]) * numel[n] for n in shapes}
    counts = {n: int(math.floor(exact[n])) for n in shapes}
    short = kept_total - sum(counts.values())
    order = sorted((n for n in shapes if counts[n] < numel[n]), key=lambda n: (-(exact[n] - counts[n]), n))
    for n in order[:max(0, short)]:
        counts[n] += 1
    return counts
