"""Training-FLOPs accounting (the paper's Section 4.5 conventions).

Forward cost f per example is the multiply-adds of conv and linear layers, counting only unpruned
weights (f_S) or all of them (f_D); normalisation, activations, pooling and weightless products
(a Transformer's attention scores and values) are ignored. A training
step costs about 3 f per example (forward, backward to activations, backward to weights); static
sparse training costs 3 f_S. FLOPs here are multiply-adds x 2.

Dynamic sparse training (per example and step, in forward passes' worth):
- RigL: a mask-update step computes the dense gradient (forward f_S, backward to activations f_S,
  weight gradients f_D); the others are sparse (3 f_S). Averaged over an update period of dT steps
  this is RigL's (3 f_S dT + 2 f_S + f_D) / (dT + 1). Updates stop after the `end_fraction` of
  training, so here the formula prices the steps before that point and 3 f_S prices the rest.
- DPF computes dense gradients every step (the pruned weights keep learning): forward and backward
  to activations run through the current sparse network, the weight gradients are dense, so a
  step costs 2 f_S(t) + f_D, with f_S(t) the forward cost of the mask in use at step t.
"""
from __future__ import annotations

import torch
from torch import nn

from elth.masks import Mask


@torch.no_grad()
def forward_macs(model: nn.Module, mask: Mask | None = None) -> int:
    """Multiply-adds of one example's forward pass through conv/linear layers (masked weights skipped)."""
    params = dict(model.named_parameters())
    total = 0
    for key, pos in weight_positions(model).items():
        weights = int(mask[key].sum()) if mask is not None and key in mask else params[key].numel()
        total += weights * pos
    return total


@torch.no_grad()
def weight_positions(model: nn.Module) -> dict[str, int]:
    """Conv/linear weight name -> multiply-adds per weight in one example's forward pass
    (the output positions a weight is applied at: H x W for convs, 1 for linear layers)."""
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
    return {f"{name}.weight": pos for name, pos in positions.items()}


def training_flops(forward_macs_per_example: int, steps: int, batch_size: int) -> float:
    """FLOPs of `steps` training steps at `batch_size`: 3 forward passes' worth per example."""
    return 3.0 * 2.0 * forward_macs_per_example * steps * batch_size


def rigl_step_cost(sparse_macs: float, dense_macs: float, update_every: int) -> float:
    """RigL's mean cost of a step while masks are updated, in multiply-adds per example:
    (3 f_S dT + 2 f_S + f_D) / (dT + 1)."""
    dt = int(update_every)
    return (3.0 * sparse_macs * dt + 2.0 * sparse_macs + dense_macs) / (dt + 1)


def rigl_training_flops(
    sparse_macs: int, dense_macs: int, steps: int, batch_size: int, update_every: int, update_steps: int
) -> float:
    """FLOPs of RigL training: the first `update_steps` steps (the mask-update phase) at
    `rigl_step_cost`, the remaining ones at 3 f_S."""
    update_steps = min(int(update_steps), int(steps))
    per_example = update_steps * rigl_step_cost(sparse_macs, dense_macs, update_every)
    per_example += (int(steps) - update_steps) * 3.0 * sparse_macs
    return 2.0 * per_example * batch_size


def dpf_training_flops(sparse_macs_sum: int, dense_macs: int, steps: int, batch_size: int) -> float:
    """FLOPs of DPF training: every step 2 f_S(t) + f_D; `sparse_macs_sum` is f_S(t) summed over the steps."""
    per_example = 2.0 * float(sparse_macs_sum) + float(dense_macs) * int(steps)
    return 2.0 * per_example * batch_size
