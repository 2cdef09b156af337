"""Dynamic sparse training baselines: RigL and DPF as training-loop controllers.

Their runs (`train_dst`) are a workflow: `elth.workflows.dst_training`.

Both methods train a sparse network from scratch while its connectivity changes; they plug into
`elth.training.train` through its `controller=` hooks (see `elth.training.loop`).

RigL (Evci et al., 2020): a random mask with ERK (default) or uniform layer densities. Every
`update_every` steps (default 100) until `end_fraction` (0.75) of training, each sparse layer drops
the alpha_t fraction of its active weights with the smallest |w|, alpha_t = drop_fraction
(1 + cos(pi t / t_end)) / 2, and grows as many inactive weights with the largest |dense gradient|
of the current batch. A weight dropped in an update is not regrown in the same update (the drop
count is capped by the inactive weights), so per-layer counts never change. Dropped weights are
zeroed with their momentum; grown weights start at 0 with zero momentum. As in the reference
implementations, a mask-update step does not apply the optimiser update. Between updates the
gradients of inactive weights are masked before the optimiser step, which keeps them (and their
momentum, under weight decay too) exactly zero.

DPF (Lin et al., 2020): the controller keeps dense weights W; the model holds m * W, so forward and
backward run through the sparse network, and the gradient (taken at m * W) updates the dense W
(error feedback: pruned weights keep learning and can come back). The mask is a global magnitude
mask of |W| over the eligible weights, recomputed every `update_every` steps (default 16) with the
sparsity schedule s_t = s_f (1 - (1 - t / t_end)^3), t_end = `end_fraction` of training (default
0.75, as RigL; the schedule reaches s_f exactly at t_end), and frozen after t_end. At the end the
model's weights are m * W: a truly sparse network.

Excluded layers (by default the output layer of MLPs and VGGs) stay dense and count in the
totals, as in IMP. Sparsities are over all prunable weights.
"""
from elth.sparsity.dst.common import dpf_sparsity, rigl_drop_fraction
from elth.sparsity.dst.densities import (
    DISTRIBUTIONS,
    DSTError,
    erk_densities,
    kept_counts,
    layer_densities,
    uniform_densities,
)
from elth.sparsity.dst.dpf import DPF
from elth.sparsity.dst.rigl import RigL

__all__ = [
    "DISTRIBUTIONS",
    "DPF",
    "DSTError",
    "RigL",
    "dpf_sparsity",
    "erk_densities",
    "kept_counts",
    "layer_densities",
    "rigl_drop_fraction",
    "uniform_densities",
]
