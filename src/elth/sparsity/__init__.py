"""Masks, IMP, one-shot and pruning-at-initialisation methods."""
from elth.sparsity.masks import (
    Mask,
    apply_mask,
    collapsed_layers,
    count,
    eligible_names,
    full_mask,
    layer_stats,
    prunable_names,
    prune_lowest,
    sparsity,
)

__all__ = [
    "Mask",
    "apply_mask",
    "collapsed_layers",
    "count",
    "eligible_names",
    "full_mask",
    "layer_stats",
    "prunable_names",
    "prune_lowest",
    "sparsity",
]
