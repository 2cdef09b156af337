"""K models of one architecture as one network (horizontal fusion), in one of two layouts.

Grouped (conv, linear and batch-norm layers, the paper's families): `FusedNetwork(models)` copies
the first model and replaces every layer that holds weights by one that holds all K members'
weights side by side: a convolution becomes a grouped convolution with K times the channels (group
k sees only member k's channels), a BatchNorm covers K x C channels (statistics are per channel,
so per member), a linear layer becomes `FusedLinear` (one batched matmul). Activations of conv
layers are [N, K*C, H, W] and of linear layers [N, K*D], member-major, so the model's own
`forward` (ReLUs, residual adds, pooling, flatten) runs unchanged on the fused layers and nothing
of one member reaches another: every op is per channel or per member group.

Stacked (any other network: LayerNorm, attention, shared or frozen weights, a user's own layers):
every parameter and buffer gets a leading member dimension and the model's own `forward` runs once
per member under `torch.func.vmap`, which turns each op into its batched form (an op without a
batching rule runs member by member inside the one call). Nothing in this layout relies on the forward being per
channel, so it is the fallback for every model the grouped one cannot hold, and for a grouped
copy whose outputs on a probe batch differ from the members' own (a forward that mixes channels,
e.g. a parameter-free normalisation over features, or reshapes to a fixed channel count).

In both, every fused tensor (weight, bias, BN buffer, mask, momentum buffer) is the K member
tensors stacked along a new first dimension and reshaped: `t.reshape(K, *member_shape)[k]` is
member k's; so masks, the optimiser and DST controllers work on either layout unchanged.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.func import functional_call, vmap

from elth.errors import ElthError


class FusionError(ElthError):
    """Models that cannot be trained as one fused network."""


#: The two layouts (see the module docstring).
GROUPED, STACKED = "grouped", "stacked"
#: Examples per member in the probe batch that checks a grouped copy against the members.
PROBE_BATCH = 2
#: A grouped copy is kept when its probe logits lie within this share of the largest member logit
#: of the members' own (rounding, TF32 convolutions on GPUs: ~1e-3; members mixed: order 1).
PROBE_TOLERANCE = 1e-2
#: What vmap says of an op it runs member by member: expected here (e.g. attention on CPUs).
_VMAP_FALLBACK_WARNING = "There is a performance drop because we have not yet implemented the batching rule"


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


def _fused_linear(m: nn.Linear, k: int) -> FusedLinear:
    return FusedLinear(k, m.in_features, m.out_features, m.bias is not None, m.weight.device, m.weight.dtype)


#: The layers the grouped layout holds, each with its K-member form.
_GROUPED_FORMS = {nn.Conv2d: _fused_conv, nn.BatchNorm2d: _fused_batchnorm, nn.Linear: _fused_linear}


def grouped_layout_holds(model: nn.Module) -> bool:
    """Whether every layer of `model` that holds weights or buffers has a grouped form, no weight is
    shared between layers (grouped forms are one per layer) and none is frozen."""
    return _grouped_obstacle(model) is None


def _grouped_obstacle(model: nn.Module) -> str | None:
    """What keeps `model` out of the grouped layout, or None."""
    seen: set[int] = set()
    tied = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.append(name)
        seen.add(id(p))
    if tied:
        return f"it shares weights ({', '.join(tied)})"
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:  # grouped forms make fresh parameters (trainable); the stacked copy keeps each one's flag
        return f"it has frozen parameters ({', '.join(frozen[:3])}{', ...' if len(frozen) > 3 else ''})"
    for path, m in model.named_modules():
        holds_tensors = any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))
        if holds_tensors and type(m) not in _GROUPED_FORMS:
            return f"layer {path!r} ({type(m).__name__}) has no grouped form"
    return None


def _grouped_copy(first: nn.Module, k: int, name: str) -> nn.Module:
    """`first` with every weighted layer replaced by its K-member grouped form."""
    obstacle = _grouped_obstacle(first)
    if obstacle is not None:
        raise FusionError(f"cannot fuse {name} in the grouped layout: {obstacle}")
    net = copy.deepcopy(first)
    for path, module in list(net.named_modules()):
        form = _GROUPED_FORMS.get(type(module))
        if form is not None:
            parent, _, attr = path.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, attr, form(module, k))
    return net


def _stacked_copy(first: nn.Module, k: int) -> nn.Module:
    """`first` with a leading member dimension on every parameter and buffer (each starting as K
    copies of the first member's; tied parameters stay tied)."""
    net = copy.deepcopy(first)
    stacked: dict[int, torch.Tensor] = {}
    for module in net.modules():
        for table in (module._parameters, module._buffers):
            for attr, t in table.items():
                if t is not None:
                    if id(t) not in stacked:
                        copies = t.detach().unsqueeze(0).repeat(k, *[1] * t.ndim)
                        is_param = isinstance(t, nn.Parameter)
                        stacked[id(t)] = nn.Parameter(copies, requires_grad=t.requires_grad) if is_param else copies
                    table[attr] = stacked[id(t)]
    return net


class FusedNetwork(nn.Module):
    """K members of one architecture trained as one network.

    `forward(x)` takes the members' inputs stacked, [K, N, ...], and returns their logits
    [K, N, classes]. `load_members(states)` / `member_state(k)` move weights and buffers in and out
    in the members' own state-dict layout. `layout`: GROUPED, STACKED or None (grouped where the
    model's layers allow it and a probe batch agrees with the members, else stacked).
    """

    def __init__(self, models: list[nn.Module], layout: str | None = None):
        super().__init__()
        if not models:
            raise FusionError("a fused network needs at least one member")
        if layout not in (None, GROUPED, STACKED):
            raise FusionError(f"unknown fused layout {layout!r}; known: {GROUPED}, {STACKED}")
        first = models[0]
        names = {getattr(m, "name", type(m).__name__) for m in models}
        shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in models]
        if len(names) != 1 or any(s != shapes[0] for s in shapes):
            raise FusionError(f"only models of one architecture can be fused, got {', '.join(sorted(names))}")
        self.k = len(models)
        self.name = getattr(first, "name", type(first).__name__)
        self.member_shapes: dict[str, tuple[int, ...]] = shapes[0]
        #: Whether inputs are made channels_last (set together with the weights' memory format).
        self.channels_last = False
        states = [m.state_dict() for m in models]
        if layout != STACKED:
            try:
                self._use(GROUPED, _grouped_copy(first, self.k, self.name), states)
            except FusionError:
                if layout == GROUPED:
                    raise
            else:
                if layout == GROUPED or self._agrees_with(models):
                    return
        warnings.filterwarnings("ignore", message=_VMAP_FALLBACK_WARNING)
        self._use(STACKED, _stacked_copy(first, self.k), states)

    def _use(self, layout: str, net: nn.Module, states: list[dict[str, torch.Tensor]]) -> None:
        self.layout, self.net = layout, net
        self.load_members(states)

    @torch.no_grad()
    def _agrees_with(self, models: list[nn.Module]) -> bool:
        """Whether this network's logits on a random probe batch (different per member; eval mode)
        are the members' own: a forward that mixes the members' channels fails here."""
        shape = getattr(models[0], "input_shape", None)
        if shape is None:
            return True  # nothing to probe with: the docstring's condition is the caller's
        param = next(self.net.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.k, PROBE_BATCH, *shape, generator=g).to(device)
        modes = [m.training for m in (self, *models)]
        try:
            for m in (self, *models):
                m.eval()
            fused = self(x)
            lone = torch.stack([m(x[i]) for i, m in enumerate(models)])
        except RuntimeError:
            return False  # e.g. a forward that reshapes to the member's channel count
        finally:
            for m, mode in zip((self, *models), modes):
                m.train(mode)
        if fused.shape != lone.shape or not torch.equal(fused.isfinite(), lone.isfinite()):
            return False
        finite = lone.isfinite()  # a member with non-finite weights has non-finite logits either way
        if not finite.any():
            return True
        scale = float(lone[finite].abs().max())
        return float((fused[finite] - lone[finite]).abs().max()) <= PROBE_TOLERANCE * max(scale, 1e-6)

    def to_channels_last(self) -> "FusedNetwork":
        """Grouped layout: channels_last weights and inputs. Stacked: unchanged (its weights
        have a member dimension, which channels_last does not know)."""
        if self.layout == GROUPED:
            self.to(memory_format=torch.channels_last)
            self.channels_last = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, n = x.shape[0], x.shape[1]
        if k != self.k:
            raise FusionError(f"the fused network has {self.k} members, the input {k}")
        if self.layout == STACKED:
            params, buffers = dict(self.net.named_parameters()), dict(self.net.named_buffers())
            if k == 1:  # views of the one member's tensors: no vmap (a lone run's own kernels)
                one = lambda tensors: {name: t[0] for name, t in tensors.items()}
                return self._member_forward(one(params), one(buffers), x[0]).unsqueeze(0)
            return vmap(self._member_forward, randomness="different")(params, buffers, x)
        # Member k's channels (or features) become channels k*C .. (k+1)*C - 1 of one input.
        fused_in = x.transpose(0, 1).reshape(n, k * x.shape[2], *x.shape[3:])
        if self.channels_last and fused_in.ndim == 4:
            fused_in = fused_in.contiguous(memory_format=torch.channels_last)
        out = self.net(fused_in)
        return out.reshape(n, k, -1).transpose(0, 1)

    def _member_forward(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        """One member's forward (under vmap: `params`, `buffers` and `x` are that member's)."""
        return functional_call(self.net, (params, buffers), (x,))

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
