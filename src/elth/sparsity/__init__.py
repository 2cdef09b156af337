"""Masks, IMP, one-shot and pruning-at-initialisation methods.

Masks are imported eagerly; the parts that train (IMP, rewind points, ticket training) load on
first use, so `elth.training` may itself use the mask helpers without an import cycle.
"""
from __future__ import annotations

import importlib

from elth.sparsity.masks import (
    Mask,
    apply_mask,
    collapsed_layers,
    count,
    eligible_names,
    excluded_names,
    full_mask,
    imp_kept_counts,
    layer_stats,
    magnitude_prune,
    prunable_names,
    prune_lowest,
    sparsity,
)

#: name -> module of the lazily imported parts
_LAZY = {
    "IMPConfig": "elth.sparsity.imp",
    "LevelResult": "elth.sparsity.imp",
    "run_imp": "elth.sparsity.imp",
    "rewind_point": "elth.sparsity.rewind",
    "train_ticket": "elth.sparsity.ticket_training",
    "train_dst": "elth.sparsity.dst",
    "to_torch_prune": "elth.sparsity.torch_prune",
    "from_torch_prune": "elth.sparsity.torch_prune",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'elth.sparsity' has no attribute {name!r}")


__all__ = [
    "Mask",
    "apply_mask",
    "collapsed_layers",
    "count",
    "eligible_names",
    "excluded_names",
    "full_mask",
    "imp_kept_counts",
    "layer_stats",
    "magnitude_prune",
    "prunable_names",
    "prune_lowest",
    "sparsity",
    *_LAZY,
]
