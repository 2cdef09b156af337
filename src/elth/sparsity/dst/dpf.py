"""DPF (dynamic pruning with feedback) as a training-loop controller (see `elth.sparsity.dst`)."""
from __future__ import annotations

import torch
from torch import nn

from elth.console import percent
from elth.masks import count_for_sparsity, excluded_names
from elth.sparsity.dst.common import (
    FusedMaskControllers,
    MaskController,
    check_settings,
    dpf_sparsity,
    top_k_mask,
)
from elth.sparsity.dst.densities import DSTError, param_shapes
from elth.training import distributed
from elth.training.fused.network import FusedNetwork


class DenseFeedbackSteps:
    """DPF's work around every optimiser step, for anything with `params` (the sparse layers'
    weights, holding m * W), `dense` (W), `layouts` (m) and `is_update_point`/`update`."""

    params: list[torch.Tensor]
    dense: list[torch.Tensor]
    layouts: list[torch.Tensor]

    @torch.no_grad()
    def after_backward(self, step: int) -> bool:
        # The gradient was taken at m * W; the optimiser applies it to the dense W.
        if self.params:
            torch._foreach_copy_(self.params, self.dense)
        return True

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        if not self.params:
            return
        torch._foreach_copy_(self.dense, self.params)
        progress = step + 1
        if self.is_update_point(progress):
            self.update(progress)
        torch._foreach_mul_(self.params, self.layouts)


class DPF(DenseFeedbackSteps, MaskController):
    """Dynamic pruning with feedback as a `TrainingController` (described in `elth.sparsity.dst`)."""

    method = "dpf"

    def __init__(
        self, sparsity: float, total_steps: int, *, update_every: int = 16, end_fraction: float = 0.75, exclude=None,
    ):
        check_settings(sparsity, total_steps, update_every, end_fraction)
        self.sparsity, self.total_steps = float(sparsity), int(total_steps)
        self.update_every, self.end_fraction = int(update_every), float(end_fraction)
        self.exclude = None if exclude is None else tuple(exclude)
        self.end_step = max(1, int(end_fraction * total_steps))
        self.excluded: list[str] = []

    def is_update_point(self, progress: int) -> bool:
        """Whether the mask is recomputed once `progress` optimiser steps are done."""
        return progress == self.end_step or (progress < self.end_step and progress % self.update_every == 0)

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.excluded = excluded_names(model, None if self.exclude is None else list(self.exclude))
        shapes = param_shapes(model)
        self.all_names, self.shapes = list(shapes), shapes
        self.total = sum(s.numel() for s in shapes.values())
        self.excluded_numel = sum(shapes[n].numel() for n in self.excluded)
        if count_for_sparsity(self.total, self.sparsity) < self.excluded_numel:
            raise DSTError(
                f"the dense (excluded) layers alone hold more than {percent(1 - self.sparsity)} of the "
                "prunable weights; ask for a lower sparsity or exclude fewer layers"
            )
        params = dict(model.named_parameters())
        self.names = [n for n in shapes if n not in set(self.excluded)]
        self.params = [params[n] for n in self.names]
        with torch.no_grad():
            self.dense = [p.detach().clone() for p in self.params]
        self.masks = [torch.ones(shapes[n], dtype=torch.bool, device=p.device) for n, p in zip(self.names, self.params)]
        self._refresh_layouts()
        self.segment_start = 0
        self.finished_weight_steps = {n: 0 for n in self.names}

    @torch.no_grad()
    def update(self, progress: int) -> None:
        """The global magnitude mask of the dense weights at the schedule's sparsity for `progress`."""
        for n, m in zip(self.names, self.masks):
            self.finished_weight_steps[n] += int(m.sum()) * (progress - self.segment_start)
        self.segment_start = progress
        s = dpf_sparsity(progress, self.sparsity, self.end_step)
        keep = count_for_sparsity(self.total, s) - self.excluded_numel
        flat = top_k_mask(torch.cat([d.abs().flatten().float() for d in self.dense]), keep)
        offset = 0
        for i, n in enumerate(self.names):
            numel = self.shapes[n].numel()
            self.masks[i] = flat[offset:offset + numel].view(self.shapes[n]).clone()
            offset += numel
        self._refresh_layouts()
        # Several ranks: the dense weights get the same all-reduced gradients, so the masks agree.
        distributed.check_identical(dict(zip(self.names, self.masks)), f"DPF masks after the update at step {progress}")

    def weight_steps(self, progress: int) -> dict[str, int]:
        """Per prunable weight tensor: kept weights summed over the first `progress` steps (FLOPs)."""
        out = {n: self.shapes[n].numel() * progress for n in self.all_names}
        for n, m in zip(self.names, self.masks):
            out[n] = self.finished_weight_steps[n] + int(m.sum()) * (progress - self.segment_start)
        return out

    def dense_weights(self) -> dict[str, torch.Tensor]:
        """The dense weights W of the eligible layers, on the CPU."""
        return {n: d.detach().cpu().contiguous() for n, d in zip(self.names, self.dense)}

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "dense": self.dense_weights(),
            "segment_start": self.segment_start,
            "finished_weight_steps": dict(self.finished_weight_steps),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for n, d in zip(self.names, self.dense):
            d.copy_(state["dense"][n])
        self.segment_start = int(state["segment_start"])
        self.finished_weight_steps = {n: int(state["finished_weight_steps"][n]) for n in self.names}

    def hparams(self) -> dict:
        return {
            "method": self.method, "sparsity": self.sparsity, "total_steps": self.total_steps,
            "update_every": self.update_every, "end_fraction": self.end_fraction, "excluded": list(self.excluded),
        }

    @classmethod
    def fuse(cls, controllers: list["DPF"], net: FusedNetwork, optimizer) -> "FusedDPF":
        """The controllers of a fused group's members (each attached to its own model) as one
        controller of the fused network `net` (see `FusedDPF`)."""
        return FusedDPF(controllers, net)


class FusedDPF(DenseFeedbackSteps, FusedMaskControllers):
    """DPF for the K members of a fused network, each exactly as its own `DPF` would train it.

    The copies and the mask multiply of every step run once over the fused tensors. Each member's
    controller keeps its state (masks, schedule, FLOPs counts) and sees its part of the fused
    weights and dense weights as views, so its own `update` computes its member's mask (a member's
    global top-k, at its own sparsity) and its own `state_dict` is what its checkpoint needs.
    Members share the mask-update schedule (total steps, interval, end) and the sparse layers.
    """

    def __init__(self, controllers: list[DPF], net: FusedNetwork):
        super().__init__(controllers, net, lambda c: (c.total_steps, c.update_every, c.end_step, tuple(c.names)), "DPF")
        with torch.no_grad():
            self.dense = [torch.empty_like(p) for p in self.params]
        for j, (p, d) in enumerate(zip(self.params, self.dense)):
            for c, param_part, dense_part in zip(controllers, self.parts(p, j), self.parts(d, j)):
                dense_part.copy_(c.dense[j])  # a resumed member's dense weights (its weights hold m * W)
                c.params[j], c.dense[j] = param_part, dense_part

    def is_update_point(self, progress: int) -> bool:
        return self.first.is_update_point(progress)

    def update(self, progress: int) -> None:
        """Every member's own mask update, then the fused layouts."""
        for c in self.members:
            c.update(progress)
        self.refresh_layouts()
