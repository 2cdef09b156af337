"""Analyses of trained tickets: linear mode connectivity (stability to SGD noise)."""
from elth.analysis.lmc import (
    BN_MODES,
    DEFAULT_BN_BATCHES,
    LMCError,
    LMCResult,
    alphas_of,
    default_label,
    instability,
    interpolate,
    linear_mode_connectivity,
    recompute_bn_statistics,
)
from elth.analysis.lmc_plot import plot_lmc

__all__ = [
    "BN_MODES",
    "DEFAULT_BN_BATCHES",
    "LMCError",
    "LMCResult",
    "alphas_of",
    "default_label",
    "instability",
    "interpolate",
    "linear_mode_connectivity",
    "plot_lmc",
    "recompute_bn_statistics",
]
