"""K models of one architecture as one network (horizontal fusion).

`FusedNetwork(models)` copies the first model and replaces every layer that holds weights by one
that holds all K members' weights side by side: a convolution becomes a grouped convolution with
K times the channels (group k sees only member k's channels), a BatchNorm covers K x C channels
(statistics are per channel, so per member), a linear layer becomes `FusedLinear` (one batched
matmul). Activations of conv layers are [N, K*C, H, W] and of linear layers [N, K*D], member-major,
so the model's own `forward` (ReLUs, residual adds, pooling, flatten) runs unchanged on the fused
layers and nothing of one member reaches another: every op is per channel or per member group.

Every fused tensor (weight, bias, BN buffer, mask, momentum buffer) is the K member tensors
stacked along a new first dimension and reshaped: `t.reshape(K, *member_shape)[k]` is member k's.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from elth.errors import ElthError


class FusionError(ElthError):
    """Models that cannot be trained as one fused network."""


class FusedLinear(nn.Module):
    """K linear layers: input [N, K*in] -> output [N, K*out] by one batched matmul.

    `weight` is [K, out, in] and `bias` [K, out]: member k's are exactly its nn.Linear tensors, and
    the product is the same `bias + x @ weight.T` per member as nn.Linear computes.
    """

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool, device=None, dtype=None):
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(k, out_features, device=device, dtype=dtype)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        xs = x.reshape(n, self.k, self.in_features).transpose(0, 1).contiguous()
        y = _BatchedLinear.apply(xs, self.weight, self.bias)
        return y.transpose(0, 1).reshape(n, self.k * self.out_features)

    def extra_repr(self) -> str:
        return f"k={self.k}, in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _BatchedLinear(torch.autograd.Function):
    """y[k] = x[k] @ w[k].T + b[k] for x [K, N, in], w [K, out, in], b [K, out] or None.

    The backward computes what nn.Linear's does, member by member and in the same layouts:
    grad_w[k] = g[k].T @ x[k] (straight into the weight's [out, in] layout, no transposed copy),
    grad_x[k] = g[k] @ w[k], grad_b[k] = g[k].sum(0); so the gradients equal a lone model's bit for
    bit, and the weight gradient needs no extra copy.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        wt = weight.transpose(1, 2)
        if bias is None:
            return torch.bmm(x, wt)
        return torch.baddbmm(bias.unsqueeze(1), x, wt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        # Under autocast the forward ran in a lower precision: the backward does too (as autocast's
        # own casts would arrange), and autograd casts each gradient to its input's dtype.
        x, weight = x.to(grad.dtype), weight.to(grad.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad, weight)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(grad.transpose(1, 2), x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = torch.stack([g.sum(0) for g in grad.unbind(0)])
        return grad_x, grad_w, grad_b


def _fused_conv(m: nn.Conv2d, k: int) -> nn.Conv2d:
    if m.padding_mode != "zeros":
        raise FusionError(f"cannot fuse a convolution with padding mode {m.padding_mode!r}")
    return nn.Conv2d(
        k * m.in_channels, k * m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
        groups=k * m.groups, bias=m.bias is not None, device=m.weight.device, dtype=m.weight.dtype,
    )


def _fused_batchnorm(m: nn.BatchNorm2d, k: int) -> nn.BatchNorm2d:
    if m.momentum is None:
        # A cumulative average reads num_batches_tracked as one number; members keep their own.
        raise FusionError("cannot fuse a BatchNorm with a cumulative moving average (momentum=None)")
    b = nn.BatchNorm2d(
        k * m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
        device=m.running_mean.device if m.running_mean is not None else None,
    )
    if m.track_running_stats:
        # One counter per member (each member's checkpoint holds its own).
        b.num_batches_tracked = torch.zeros(k, dtype=torch.long, device=b.running_mean.device)
    return b


def _fused_module(m: nn.Module, k: int) -> nn.Module | None:
    if type(m) is nn.Conv2d:
        return _fused_conv(m, k)
    if type(m) is nn.BatchNorm2d:
        return _fused_batchnorm(m, k)
    if type(m) is nn.Linear:
        return FusedLinear(k, m.in_features, m.out_features, m.bias is not None, m.weight.device, m.weight.dtype)
    return None


class FusedNetwork(nn.Module):
    """K members of one architecture trained as one network.

    `forward(x)` takes the members' inputs stacked, [K, N, ...], and returns their logits
    [K, N, classes]. `load_members(states)` / `member_state(k)` move weights and buffers in and out
    in the members' own state-dict layout.
    """

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if not models:
            raise FusionError("a fused network needs at least one member")
        first = models[0]
        names = {getattr(m, "name", type(m).__name__) for m in models}
        shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in models]
        if len(names) != 1 or any(s != shapes[0] for s in shapes):
            raise FusionError(f"only models of one architecture can be fused, got {', '.join(sorted(names))}")
        self.k = len(models)
        self.name = getattr(first, "name", type(first).__name__)
        self.member_shapes: dict[str, tuple[int, ...]] = shapes[0]
        net = copy.deepcopy(first)
        for name, module in list(net.named_modules()):
            fused = _fused_module(module, self.k)
            if fused is not None:
                parent, _, attr = name.rpartition(".")
                setattr(net.get_submodule(parent) if parent else net, attr, fused)
            elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
                raise FusionError(f"cannot fuse layer {name!r} ({type(module).__name__}) of {self.name}")
        self.net = net
        #: Whether inputs are made channels_last (set together with the weights' memory format).
        self.channels_last = False
        self.load_members([m.state_dict() for m in models])

    def to_channels_last(self) -> "FusedNetwork":
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, n = x.shape[0], x.shape[1]
        if k != self.k:
            raise FusionError(f"the fused network has {self.k} members, the input {k}")
        # Member k's channels (or features) become channels k*C .. (k+1)*C - 1 of one input.
        fused_in = x.transpose(0, 1).reshape(n, k * x.shape[2], *x.shape[3:])
        if self.channels_last and fused_in.ndim == 4:
            fused_in = fused_in.contiguous(memory_format=torch.channels_last)
        out = self.net(fused_in)
        return out.reshape(n, k, -1).transpose(0, 1)

    @torch.no_grad()
    def load_members(self, states: list[dict[str, torch.Tensor]]) -> None:
        """Set every weight and buffer from the members' state dicts (in member order)."""
        if len(states) != self.k:
            raise FusionError(f"{len(states)} member states for {self.k} members")
        own = self.net.state_dict()
        for key, target in own.items():
            target.copy_(stack_members([s[key] for s in states], target))

    @torch.no_grad()
    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights and buffers as its own model's state dict (new tensors)."""
        return {key: member_slice(t, self.k, self.member_shapes[key], k).clone() for key, t in self.net.state_dict().items()}


def stack_members(tensors: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The members' tensors stacked into the shape (and device, dtype) of the fused tensor `like`."""
    stacked = torch.stack([t.detach().to(like.device) for t in tensors])
    return stacked.reshape(like.shape).to(like.dtype)


def member_slice(t: torch.Tensor, k: int, shape: tuple[int, ...], index: int) -> torch.Tensor:
    """Member `index`'s part of the fused tensor `t` (K members), in the member's `shape`."""
    return t.detach().reshape(k, *shape)[index]


def member_views(t: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The K members' parts of a fused tensor as views (same memory layout as a member's tensor)."""
    return list(t.detach().unflatten(0, (k, -1)).unbind(0))


def member_parts(t: torch.Tensor, k: int, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """`member_views` in the members' `shape`: what is written into a part lands in `t` (as
    `member_slice`, but never a copy)."""
    return [part.view(shape) for part in member_views(t, k)]
