"""RigL as a training-loop controller (see `elth.sparsity.dst` for the method)."""
from __future__ import annotations

import math

import torch
from torch import nn

from elth.masks import count_for_sparsity, excluded_names
from elth.sparsity.baselines import derived_seed
from elth.sparsity.dst.common import (
    FusedMaskControllers,
    MaskController,
    check_settings,
    rigl_drop_fraction,
    top_k_mask,
)
from elth.sparsity.dst.densities import (
    DISTRIBUTIONS,
    DSTError,
    kept_counts,
    layer_densities,
    param_shapes,
)
from elth.training import distributed
from elth.training.fused.network import FusedNetwork
from elth.training.masking import mask_gradients, mask_like


class RigL(MaskController):
    """RigL as a `TrainingController` (the method is described in `elth.sparsity.dst`)."""

    method = "rigl"

    def __init__(
        self, sparsity: float, total_steps: int, *, distribution: str = "erk", update_every: int = 100,
        drop_fraction: float = 0.3, end_fraction: float = 0.75, exclude=None, seed: int = 0,
    ):
        check_settings(sparsity, total_steps, update_every, end_fraction)
        if distribution not in DISTRIBUTIONS:
            raise DSTError(f"unknown layer distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
        if not 0.0 < drop_fraction < 1.0:
            raise DSTError(f"the drop fraction must be in (0, 1), got {drop_fraction}")
        self.sparsity, self.total_steps = float(sparsity), int(total_steps)
        self.distribution, self.update_every = distribution, int(update_every)
        self.drop_fraction, self.end_fraction = float(drop_fraction), float(end_fraction)
        self.exclude = None if exclude is None else tuple(exclude)
        self.seed = int(seed)
        self.end_step = int(end_fraction * total_steps)
        self.excluded: list[str] = []

    def is_update_step(self, step: int) -> bool:
        return 0 < step < self.end_step and step % self.update_every == 0

    def update_steps(self) -> int:
        """How many mask updates a full training makes."""
        return (self.end_step - 1) // self.update_every if self.end_step > 0 else 0

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.excluded = excluded_names(model, None if self.exclude is None else list(self.exclude))
        shapes = param_shapes(model)
        total = sum(s.numel() for s in shapes.values())
        densities = layer_densities(model, 1.0 - self.sparsity, self.distribution, self.exclude)
        counts = kept_counts(densities, shapes, count_for_sparsity(total, self.sparsity))
        self.all_names = list(shapes)
        self.shapes = shapes
        params = dict(model.named_parameters())
        g = torch.Generator().manual_seed(derived_seed(self.seed, "rigl-mask"))
        self.names, self.params, self.masks, self.layouts = [], [], [], []
        for n in shapes:
            numel = shapes[n].numel()
            if counts[n] >= numel:
                continue  # dense layer: never masked
            flat = torch.zeros(numel, dtype=torch.bool)
            flat[torch.randperm(numel, generator=g)[: counts[n]]] = True
            p = params[n]
            self.names.append(n)
            self.params.append(p)
            self.masks.append(flat.view(shapes[n]).to(p.device))
        self._refresh_layouts()
        with torch.no_grad():
            if self.params:
                torch._foreach_mul_(self.params, self.layouts)

    @torch.no_grad()
    def after_backward(self, step: int) -> bool:
        if self.is_update_step(step):
            self.update(step)
            return False
        mask_gradients(self.params, self.layouts)
        return True

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Drop and grow in every sparse layer, from the weights and dense gradients now in the model."""
        alpha = rigl_drop_fraction(step, self.drop_fraction, self.end_step)
        for i, p in enumerate(self.params):
            self.update_layer(i, alpha, p, p.grad, self.optimizer.state.get(p, {}).get("momentum_buffer"))
        self.check_masks(step)

    @torch.no_grad()
    def update_layer(self, i: int, alpha: float, weight: torch.Tensor, grad: torch.Tensor | None,
                     momentum: torch.Tensor | None) -> None:
        """Sparse layer `i`'s drop (the smallest active `weight`s) and grow (the largest inactive `grad`s)
        of a fraction `alpha` of its active weights; `weight` and `momentum` are changed in place."""
        if grad is None:
            return
        mask = self.masks[i]
        active = mask.flatten()
        n_active = int(active.sum())
        k = min(int(alpha * n_active), active.numel() - n_active)
        if k <= 0:
            return
        dropped = top_k_mask(-weight.detach().abs().flatten().float().masked_fill(~active, math.inf), k)
        grown = top_k_mask(grad.abs().flatten().float().masked_fill(active, -1.0), k)
        survivors = active & ~dropped
        new = survivors | grown
        keep = survivors.view(mask.shape)
        weight.mul_(keep)  # dropped weights to 0; grown ones were inactive, so already 0
        if momentum is not None:
            momentum.mul_(keep)  # dropped and grown weights start with zero momentum
        self.masks[i] = new.view(mask.shape)
        self.layouts[i] = mask_like(weight, self.masks[i])

    def check_masks(self, step: int) -> None:
        # Several ranks: drop (|w|) and grow (|dense gradient|, all-reduced by DDP) chose the same
        # weights on every rank; a rank that diverged stops the run here, at the update that diverged.
        distributed.check_identical(dict(zip(self.names, self.masks)), f"RigL masks after the update at step {step}")

    def hparams(self) -> dict:
        return {
            "method": self.method, "sparsity": self.sparsity, "total_steps": self.total_steps,
            "distribution": self.distribution, "update_every": self.update_every,
            "drop_fraction": self.drop_fraction, "end_fraction": self.end_fraction,
            "excluded": list(self.excluded), "seed": self.seed,
        }

    @classmethod
    def fuse(cls, controllers: list["RigL"], net: FusedNetwork, optimizer) -> "FusedRigL":
        """The controllers of a fused group's members as one controller of `net` (see `FusedRigL`)."""
        return FusedRigL(controllers, net, optimizer)


class FusedRigL(FusedMaskControllers):
    """RigL for the K members of a fused network, each exactly as its own `RigL` would train it.

    The gradient masks of ordinary steps are one fused multiply; at a mask update each member's
    controller drops and grows in its own part of every fused weight, gradient and momentum buffer
    (views) by its own `update_layer`, so its masks and its `state_dict` are a lone run's. Members
    share the update schedule; a layer that one member keeps dense (its sparsity leaves ERK no
    choice) is all ones in that member's part of the fused mask. On update steps no member's
    optimiser steps.
    """

    def __init__(self, controllers: list[RigL], net: FusedNetwork, optimizer):
        super().__init__(controllers, net, lambda c: (c.update_every, c.end_step, tuple(c.all_names)), "RigL")
        buffers = dict(zip(optimizer.names, optimizer.buffers))
        self.momentum = [buffers[n] for n in self.names]

    @torch.no_grad()
    def after_backward(self, step: int) -> bool:
        if self.first.is_update_step(step):
            self.update(step)
            return False
        mask_gradients(self.params, self.layouts)
        return True

    def after_step(self, step: int) -> None:
        pass

    @torch.no_grad()
    def update(self, step: int) -> None:
        alphas = [rigl_drop_fraction(step, c.drop_fraction, c.end_step) for c in self.members]
        for j, (p, buf) in enumerate(zip(self.params, self.momentum)):
            if p.grad is None:
                continue
            bufs = self.parts(buf, j) if buf is not None else [None] * self.k
            for c, index, alpha, w, g, b in zip(self.members, self.index, alphas, self.parts(p, j),
                                                self.parts(p.grad, j), bufs):
                if index[j] is not None:
                    c.update_layer(index[j], alpha, w, g, b)
        for c in self.members:
            c.check_masks(step)
        self.refresh_layouts()
