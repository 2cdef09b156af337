"""Training-FLOPs accounting (the paper's Section 4.5 conventions).

Forward cost f per example is the multiply-adds of conv and linear layers, counting only unpruned
weights (f_S) or all of them (f_D); normalisation, activations and pooling are ignored. A training
step costs about 3 f per example (forward, backward to activations, backward to weights); static
sparse training costs 3 f_S. FLOPs here are multiply-adds x 2.
"""
from __future__ import annotations

import torch
from torch import nn

from elth.sparsity.masks import Mask


@torch.no_grad()
def forward_macs(model: nn.Module, mask: Mask | None = None) -> int:
    """Multiply-adds of one example's forward pass through conv/linear layers (masked weights skipped)."""
    positions: dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: positions.__setitem__(name, out.shape[-1] * out.shape[-2])))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: positions.__setitem__(name, out.numel() // out.shape[-1] // out.shape[0])))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros((1, *model.input_shape), device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    params = dict(model.named_parameters())
    total = 0
    for name, pos in positions.items():
        key = f"{name}.weight"
        weights = int(mask[key].sum()) if mask is not None and key in mask else params[key].numel()
        total += weights * pos
    return total


def training_flops(forward_macs_per_example: int, steps: int, batch_size: int) -> float:
    """FLOPs of `steps` training steps at `batch_size`: 3 forward passes' worth per example."""
    return 3.0 * 2.0 * forward_macs_per_example * steps * batch_size
