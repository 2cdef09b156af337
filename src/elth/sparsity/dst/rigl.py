"""RigL as a training-loop controller (see `elth.sparsity.dst` for the method)."""
from __future__ import annotations

import math

import torch
from torch import nn

from elth.masks import count_for_sparsity, excluded_names
from elth.sparsity.baselines import derived_seed
from elth.sparsity.dst.common import (
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
from elth.training.fused.network import FusedNetwork, FusionError, member_parts
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


class FusedRigL:
    """RigL for the K members of a fused network, each exactly as its own `RigL` would train it.

    The gradient masks of ordinary steps are one fused multiply; at a mask update each member's
    controller drops and grows in its own part of every fused weight, gradient and momentum buffer
    (views) by its own `update_layer`, so its masks and its `state_dict` are a lone run's. Members
    share the update schedule; a layer that one member keeps dense (its sparsity leaves ERK no
    choice) is all ones in that member's part of the fused mask. On update steps no member's
    optimiser steps.
    """

    def __init__(self, controllers: list[RigL], net: FusedNetwork, optimizer):
        first = controllers[0]
        if len({(c.update_every, c.end_step, tuple(c.all_names)) for c in controllers}) != 1:
            raise FusionError("RigL runs train fused only with the same update interval, end and layers")
        if len(controllers) != net.k:
            raise FusionError(f"{len(controllers)} RigL controllers for {net.k} fused members")
        self.members, self.k, self.first = controllers, net.k, first
        self.names = [n for n in first.all_names if any(n in c.names for c in controllers)]
        #: per member, its index of each fused sparse layer (None: the member keeps that layer dense)
        self.index = [[c.names.index(n) if n in c.names else None for n in self.names] for c in controllers]
        fused = dict(net.net.named_parameters())
        buffers = dict(zip(optimizer.names, optimizer.buffers))
        self.params = [fused[n] for n in self.names]
        self.momentum = [buffers[n] for n in self.names]
        self.shapes = [first.shapes[n] for n in self.names]
        with torch.no_grad():
            self.layouts = [torch.ones_like(p) for p in self.params]
        self._refresh_layouts()

    def _refresh_layouts(self) -> None:
        for j, (layout, shape) in enumerate(zip(self.layouts, self.shapes)):
            for part, c, index in zip(member_parts(layout, self.k, shape), self.members, self.index):
                if index[j] is not None:
                    part.copy_(c.masks[index[j]])

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
        for j, (p, buf, shape) in enumerate(zip(self.params, self.momentum, self.shapes)):
            if p.grad is None:
                continue
            weights, grads = member_parts(p, self.k, shape), member_parts(p.grad, self.k, shape)
            bufs = member_parts(buf, self.k, shape) if buf is not None else [None] * self.k
            for c, index, alpha, w, g, b in zip(self.members, self.index, alphas, weights, grads, bufs):
                if index[j] is not None:
                    c.update_layer(index[j], alpha, w, g, b)
        for c in self.members:
            c.check_masks(step)
        self._refresh_layouts()
