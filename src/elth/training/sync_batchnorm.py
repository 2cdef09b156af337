"""BatchNorm over the global batch on CPUs (torch's SyncBatchNorm runs on accelerators only).

In training mode with several ranks, the per-channel mean and variance are those of the whole
global batch: two differentiable all-reduces (sums, then squared deviations) whose backward pass
all-reduces the gradients, so the result is what one process computes on the whole batch, up to
the order of floating-point additions. Running statistics are updated as BatchNorm does (unbiased
variance over the global count). Anywhere else (eval mode, one process) it is plain BatchNorm.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn



class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Drop-in replacement of BatchNorm1d/2d/3d with the same parameters, buffers and state-dict keys."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> "GlobalBatchNorm":
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        if bn.affine:
            with torch.no_grad():
                new.weight = bn.weight
                new.bias = bn.bias
        new.running_mean = bn.running_mean
        new.running_var = bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
        new.train(bn.training)
        return new

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        local = torch.tensor([input.numel() // c], dtype=input.dtype, device=input.device)
        sums = dist_fn.all_reduce(torch.cat([input.sum(dims), local]), op=dist.ReduceOp.SUM)
        count = sums[c].detach()
        mean = sums[:c] / count
        centred = input - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims), op=dist.ReduceOp.SUM) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        unbiased = var * (count / (count - 1).clamp_min(1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
