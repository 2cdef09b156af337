"""Keeping pruned weights at exactly zero during training.

The gradients of masked tensors are multiplied by the mask before every optimiser step. With SGD
that is exact: a pruned weight starts at 0, its gradient is 0, so weight decay adds 0 and its
momentum buffer stays 0, and the update is 0. One fused multiply over all masked tensors per step
costs next to nothing.
"""
from __future__ import annotations

import torch
from torch import nn

from elth.errors import ElthError


class MaskError(ElthError, ValueError):
    """A mask that does not fit the model being trained."""


class GradientMask:
    def __init__(self, model: nn.Module, mask: dict[str, torch.Tensor]):
        params = dict(model.named_parameters())
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        self.masks: list[torch.Tensor] = []
        for name, m in mask.items():
            p = params.get(name)
            if p is None:
                raise MaskError(f"the mask covers {name!r}, which the model {getattr(model, 'name', '')} does not have")
            if tuple(m.shape) != tuple(p.shape):
                raise MaskError(f"mask of {name!r} has shape {tuple(m.shape)}, the weight has {tuple(p.shape)}")
            # Same dtype, device and strides as the weight (and so as its gradient): a plain multiply.
            self.masks.append(mask_like(p, m))
            self.names.append(name)
            self.params.append(p)
        if self.masks and not all(bool(((m == 0) | (m == 1)).all()) for m in self.masks):
            raise MaskError("a mask must hold only 0/1 (or False/True) values")

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)

    def apply_to_gradients(self) -> None:
        mask_gradients(self.params, self.masks)


def mask_like(p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`mask` as a 0/1 tensor with the dtype, device and strides of `p` (and so of its gradient):
    multiplying by it is one plain fused op."""
    return torch.empty_like(p, requires_grad=False).copy_(mask.detach())


@torch.no_grad()
def mask_gradients(params: list[nn.Parameter], masks: list[torch.Tensor]) -> None:
    """Multiply every parameter's gradient (where it has one) by its mask, in one fused call."""
    grads, layouts = [], []
    for p, m in zip(params, masks):
        if p.grad is not None:
            grads.append(p.grad)
            layouts.append(m)
    if grads:
        torch._foreach_mul_(grads, layouts)
