"""SGD for a fused network, stepped member by member so that every member's update is bitwise the
one its own optimiser would make.

One `torch.optim.SGD` over the fused tensors would give the same update up to rounding only:
the vectorised kernel splits a tensor into chunks from its first element, and a member's part of
a fused tensor starts elsewhere in those chunks (fused multiply-adds in the body, plain ones in
the tail). So the step hands the kernel each member's part as its own tensor (views, no copies):
one call, K x (number of parameters) tensors, exactly per member. Momentum buffers live in fused
tensors beside the weights, so checkpoints slice them per member like the weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.sgd import sgd

from elth.training.fused.network import (
    FusedNetwork,
    member_slice,
    member_views,
    stack_members,
)
from elth.training.lone import make_optimizer
from elth.training.protocol import Protocol


class MemberSGD:
    """SGD (momentum, weight decay, no Nesterov) over a `FusedNetwork`, member by member.

    Settings come from the optimiser `train` makes for one member (`make_optimizer`), so the two
    use the same kernel (fused where torch has it, else foreach) and the same hyperparameters.
    """

    def __init__(self, net: FusedNetwork, member_model: nn.Module, protocol: Protocol):
        self.net = net
        self.k = net.k
        self.template = make_optimizer(member_model, protocol)
        self.group = self.template.param_groups[0]
        self.names = [n for n, _ in net.net.named_parameters()]
        self.params = [p for _, p in net.net.named_parameters()]
        self.shapes = [net.member_shapes[n] for n in self.names]
        # Momentum buffers start at zero, which SGD's update turns into exactly what its first step
        # sets (buf = 0 * momentum + grad = grad), so they exist from the start and their member
        # views (like the weights') are made once, not at every step.
        momentum = self.group["momentum"] != 0
        self.buffers: list[torch.Tensor | None] = [torch.zeros_like(p) if momentum else None for p in self.params]
        self._param_views = [member_views(p, self.k) for p in self.params]
        self._buffer_views = [member_views(b, self.k) if b is not None else [None] * self.k for b in self.buffers]
        self.lr = float(self.group["lr"])

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        g = self.group
        params, grads, bufs = [], [], []
        for p, param_views, buffer_views in zip(self.params, self._param_views, self._buffer_views):
            if p.grad is not None:
                params += param_views
                grads += member_views(p.grad, self.k)
                bufs += buffer_views
        if not params:
            return
        sgd(
            params, grads, bufs,
            foreach=g.get("foreach"), fused=g.get("fused"),
            weight_decay=g["weight_decay"], momentum=g["momentum"], lr=self.lr, dampening=g["dampening"],
            nesterov=g["nesterov"], maximize=g["maximize"],
        )

    def member_state_dict(self, k: int) -> dict:
        """Member k's optimiser state in the layout of its own `torch.optim.SGD.state_dict()`."""
        state = {
            i: {"momentum_buffer": member_slice(b, self.k, self.shapes[i], k).clone()}
            for i, b in enumerate(self.buffers)
            if b is not None
        }
        groups = self.template.state_dict()["param_groups"]
        for group in groups:
            group["lr"] = self.lr
        return {"state": state, "param_groups": groups}

    @torch.no_grad()
    def load_member_state_dicts(self, states: list[dict | None]) -> None:
        """Take the members' saved SGD states (a member starting fresh keeps zero buffers) and their
        settings (they agree: same protocol)."""
        given = [s for s in states if s is not None]
        if not given:
            return
        for i, buffer in enumerate(self.buffers):
            parts = [s["state"].get(i, {}).get("momentum_buffer") if s is not None else None for s in states]
            if buffer is None or all(t is None for t in parts):
                continue
            parts = [t if t is not None else torch.zeros(self.shapes[i]) for t in parts]
            buffer.copy_(stack_members(parts, buffer))  # in place: the member views stay valid
        self.template.load_state_dict({"state": {}, "param_groups": given[0]["param_groups"]})
        self.group = self.template.param_groups[0]
        self.lr = float(self.group["lr"])
