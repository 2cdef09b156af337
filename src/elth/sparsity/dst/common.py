"""What the DST controllers share: a base class (sparse layers, their masks and layouts), schedules,
settings checks, top-k selection."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from elth.masks import Mask
from elth.sparsity.dst.densities import DSTError
from elth.training.fused.network import FusedNetwork, FusionError, member_parts
from elth.training.masking import mask_like


def rigl_drop_fraction(step: int, initial: float, end_step: int) -> float:
    """alpha_t = initial (1 + cos(pi t / t_end)) / 2 (0 from t_end on)."""
    if end_step <= 0 or step >= end_step:
        return 0.0
    return initial * (1.0 + math.cos(math.pi * step / end_step)) / 2.0


def dpf_sparsity(progress: int, final: float, end_step: int) -> float:
    """s_t = s_f (1 - (1 - t / t_end)^3), s_f from t_end on; `progress` = optimiser steps done."""
    if end_step <= 0:
        return final
    frac = min(1.0, progress / end_step)
    return final * (1.0 - (1.0 - frac) ** 3)


def check_settings(sparsity: float, total_steps: int, update_every: int, end_fraction: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise DSTError(f"sparsity must be at least 0 and below 1, got {sparsity}")
    if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
        raise DSTError(f"the mask update interval must be a positive number of steps, got {update_every!r}")
    if not 0.0 < end_fraction <= 1.0:
        raise DSTError(f"the end fraction (when mask updates stop) must be in (0, 1], got {end_fraction}")
    if total_steps < 1:
        raise DSTError(f"dynamic sparse training needs at least one step, got {total_steps}")


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A flat boolean mask of the `k` highest of the 1-D `scores`; among equal scores at the
    threshold, lower indices first (as a stable sort would choose, at the cost of one top-k)."""
    n = scores.numel()
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return mask
    if k >= n:
        return mask.fill_(True)
    threshold = torch.topk(scores, k, sorted=False).values.min()
    mask = scores > threshold
    missing = k - int(mask.sum())
    if missing > 0:
        mask[(scores == threshold).nonzero().squeeze(1)[:missing]] = True
    return mask


class MaskController:
    """The part of a DST controller that is the same for RigL and DPF.

    After `attach`, `names`/`params`/`masks` are the sparse layers (a dense layer has no entry),
    `layouts` the masks laid out like their weights (for fused multiplies), `all_names` and
    `shapes` every prunable weight. The masks travel in `state_dict()` under "masks".
    """

    method: str
    names: list[str]
    params: list[torch.nn.Parameter]
    masks: list[torch.Tensor]
    all_names: list[str]
    shapes: dict[str, torch.Size]

    def _refresh_layouts(self) -> None:
        self.layouts = [mask_like(p, m) for p, m in zip(self.params, self.masks)]

    def after_step(self, step: int) -> None:
        pass

    def mask(self) -> Mask:
        """The current mask over every prunable weight (dense layers all ones), on the CPU."""
        own = dict(zip(self.names, self.masks))
        return {n: own[n].cpu() if n in own else torch.ones(self.shapes[n], dtype=torch.bool) for n in self.all_names}

    def state_dict(self) -> dict:
        return {"masks": {n: m.cpu() for n, m in zip(self.names, self.masks)}}

    def load_state_dict(self, state: dict) -> None:
        self.masks = [state["masks"][n].to(p.device, torch.bool) for n, p in zip(self.names, self.params)]
        self._refresh_layouts()


class FusedMaskControllers:
    """What the fused forms of RigL and DPF share: the K members' own controllers (attached to
    their own models, same update schedule: `schedule(c)` equal for all), the fused network's
    sparse layers (those sparse in any member: `names`, `params`, member `shapes`), per member
    its index of each of them (`index`; None where it keeps the layer dense) and the members'
    masks side by side as `layouts` (ones where a member keeps a layer dense).
    """

    def __init__(self, controllers: list, net: FusedNetwork, schedule: Callable, what: str):
        if len({schedule(c) for c in controllers}) != 1:
            raise FusionError(f"{what} runs train fused only with the same steps, update interval, end and layers")
        if len(controllers) != net.k:
            raise FusionError(f"{len(controllers)} {what} controllers for {net.k} fused members")
        first = controllers[0]
        self.members, self.k, self.first = controllers, net.k, first
        self.names = [n for n in first.all_names if any(n in c.names for c in controllers)]
        self.index = [[c.names.index(n) if n in c.names else None for n in self.names] for c in controllers]
        fused = dict(net.net.named_parameters())
        self.params = [fused[n] for n in self.names]
        self.shapes = [first.shapes[n] for n in self.names]
        with torch.no_grad():
            self.layouts = [torch.ones_like(p) for p in self.params]
        self.refresh_layouts()

    def parts(self, t: torch.Tensor, j: int) -> list[torch.Tensor]:
        """The members' views of fused tensor `t` of sparse layer `j`."""
        return member_parts(t, self.k, self.shapes[j])

    @torch.no_grad()
    def refresh_layouts(self) -> None:
        """The fused layouts from the members' current masks."""
        for j, layout in enumerate(self.layouts):
            for part, c, index in zip(self.parts(layout, j), self.members, self.index):
                if index[j] is not None:
                    part.copy_(c.masks[index[j]])
