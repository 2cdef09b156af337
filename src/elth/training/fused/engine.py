"""K runs of one model and protocol as one fused network, each as if it ran alone.

`FusedEngine` is what `elth.training.loop` drives for a group of K > 1 members (`LoneEngine` for a
group of one): the same loop, resume, checkpoints and logs, with one fused network in place of the
member's model. Each `Member` has its own model (starting weights), mask, data seed and output
directory; what differs between members stays per member by construction:

- data: each member's batches come from its own `data.train_epoch(..., seed)` (its own order and
  augmentation); the K batches of a step are stacked, one member per channel group;
- weights, masks, BN statistics, momentum and weight decay: every fused tensor is the members'
  tensors side by side, every op of the network is per channel group or element-wise, the loss is
  the sum of the members' own mean losses (so each member's gradient is its own) and SGD steps each
  member's part on its own (`MemberSGD`);
- the LR schedule is a function of the global step, the same for every member.

Each member's output directory gets what a lone run writes there (`run.json`, `metrics.jsonl`,
`checkpoint.pt` every epoch and at the end, `result.json`): the loop is the same, so a member's run
can be resumed alone and a fused group resumes from its members' checkpoints. A member whose
training loss (or weights) stops being finite ends as a lone run ends; its NaNs reach no other
member, so the group trains on.

Over several ranks (torchrun) every rank trains the fused network (DDP) on its share of each
member's batch, as `train` does for one model.

A member may bring a controller (dynamic sparse training) as `train(..., controller=)` takes one.
Its class must know how to step the members' controllers together (`fuse(controllers, net,
optimizer)`, as DPF's and RigL's do); the members' controllers keep their own state, saved in each
member's checkpoint as `train` saves it, so a fused run and a lone one resume each other's
checkpoints. Controllers without `fuse` and per-step callbacks are not fused; those runs train
alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from elth.data.base import InMemoryDataset
from elth.errors import ElthError
from elth.training import distributed
from elth.training.device import autocast, use_channels_last
from elth.training.fused.network import FusedNetwork, FusionError, stack_members
from elth.training.fused.optimizer import MemberSGD
from elth.training.masking import GradientMask
from elth.training.member import Member
from elth.training.metrics import GroupStats, MemberStats
from elth.training.protocol import LRSchedule, Protocol
from elth.training.step import TrainingController, controlled_step


class _StateView:
    """Something with a `state_dict()` (what `RunFiles.save` reads) that returns `fn()`."""

    def __init__(self, fn):
        self.state_dict = fn


def check_controllers(controllers: list[TrainingController | None]) -> None:
    """Members train together with no controller or with controllers of one class that fuses them."""
    given = [c for c in controllers if c is not None]
    if not given:
        return
    if len(given) != len(controllers):
        raise FusionError("members with and without a controller cannot train in one fused group")
    kinds = {type(c) for c in given}
    if len(kinds) != 1 or not hasattr(type(given[0]), "fuse"):
        names = ", ".join(sorted(k.__name__ for k in kinds))
        raise FusionError(f"controllers of {names} cannot train fused (their class has no `fuse`)")


def _fused_mask(net: FusedNetwork, masks: list[dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor] | None:
    """The members' masks side by side (a member without a mask, or a layer it leaves out: ones)."""
    names = sorted({n for m in masks if m is not None for n in m})
    if not names:
        return None
    params = dict(net.net.named_parameters())
    fused = {}
    for name in names:
        if name not in params:
            raise FusionError(f"a mask covers {name!r}, which the model {net.name} does not have")
        shape = net.member_shapes[name]
        parts = [m[name] if m is not None and name in m else torch.ones(shape) for m in masks]
        fused[f"net.{name}"] = stack_members([p.to(torch.float32) for p in parts], params[name])
    return fused


def _member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy [K], all members in one kernel.

    The gradient of their sum is, member by member, bit for bit the gradient of a lone run's
    `F.cross_entropy` ((softmax - one-hot) / N for each example); the loss values themselves are
    summed in another order than a lone run's, so a logged training loss may differ in its last bit.
    """
    k, n = y.shape
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, n).mean(1)


@torch.no_grad()
def evaluate_fused(net: FusedNetwork, data, batch_size: int, device: torch.device, precision: str) -> list[tuple[float, float]]:
    """Every member's (test accuracy, mean cross-entropy), as `evaluate` gives it for one model
    (with several ranks: test batches shared out, sums reduced, as `evaluate` does)."""
    was_training = net.training
    net.eval()
    k = net.k
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    count = 0
    try:
        for x, y in data.test_batches(batch_size, **distributed.data_part_kwargs()):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = net(x.unsqueeze(0).expand(k, *x.shape))
            loss_sum += torch.stack([F.cross_entropy(logits[i].float(), y, reduction="sum") for i in range(k)])
            correct += (logits.argmax(2) == y).sum(1)
            count += y.shape[0]
    finally:
        net.train(was_training)
    totals = distributed.all_reduce_numbers([*loss_sum.tolist(), *correct.tolist(), count], device)
    loss_totals, correct_totals, count = totals[:k], totals[k : 2 * k], int(totals[-1])
    if count == 0:
        raise ElthError("the dataset has no test examples to evaluate on")
    return [(int(c) / count, s / count) for c, s in zip(correct_totals, loss_totals)]


def _stacked(streams):
    """Batches of several streams stacked as `InMemoryDataset.train_epoch_members` gives them."""
    for batch in zip(*streams):
        xs, ys = zip(*batch)
        # Stacked as [N, K, ...] in memory (the fused network's input layout: no second copy),
        # handed over as the [K, N, ...] view.
        yield torch.stack(xs, dim=1).transpose(0, 1), torch.stack(ys)


class FusedEngine:
    """Members resuming at one step, fused into one network: their models, masks, controllers and
    optimiser states (as `elth.training.loop` prepared them)."""

    def __init__(self, members: list[Member], optimizer_states: list[dict | None], data, protocol: Protocol,
                 schedule: LRSchedule, precision: str, device: torch.device):
        self.members, self.data, self.protocol = members, data, protocol
        self.precision, self.device, self.schedule = precision, device, schedule
        self.k = len(members)
        models = [m.model for m in members]
        self.net = FusedNetwork(models)
        self.name = f"{self.net.name} x{self.k} fused"
        if use_channels_last(models[0], device):
            self.net.to_channels_last()
        fused_mask = _fused_mask(self.net, [m.mask for m in members])
        self.masker = GradientMask(self.net, fused_mask) if fused_mask is not None else None
        self.optimizer = MemberSGD(self.net, models[0], protocol)
        self.optimizer.load_member_state_dicts(optimizer_states)
        controllers = [m.controller for m in members]
        # The members' controllers, attached to their own models, now step the fused network's tensors.
        self.controller = (type(controllers[0]).fuse(controllers, self.net, self.optimizer)
                           if controllers[0] is not None else None)
        # With several ranks: DDP over the fused network, each rank on its share of every member's batch.
        self.ddp = distributed.data_parallel(self.net, device)
        self.stats = GroupStats(device, self.k)  # every member's running loss and accuracy, summed at once

    @property
    def module(self) -> nn.Module:
        """The trained module, every parameter [K, ...] (what the divergence check reads)."""
        return self.net.net

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor, global_batch: int) -> torch.Tensor:
        """The update at global step index `step`; the members' losses [K]. `global_batch`: examples
        of each member's whole batch (y holds this rank's share)."""
        self.optimizer.lr = self.schedule(step)
        with autocast(self.device, self.precision):
            logits = self.ddp(x)
            losses = _member_losses(logits, y)
        self.optimizer.zero_grad()
        scale = distributed.loss_scale(y.shape[1], global_batch) if distributed.is_active() else 1.0
        (losses.sum() if scale == 1.0 else losses.sum() * scale).backward()
        if self.masker is not None:
            self.masker.apply_to_gradients()
        controlled_step(self.optimizer, self.controller, step)
        self.stats.add(losses, logits, y)
        return losses

    def after_step(self, step: int) -> None:
        """Per-step callbacks are not fused."""

    def member_stats(self, i: int) -> MemberStats:
        return self.stats.member(i)

    def batches(self, epoch: int, first: int):
        """The members' batches of `epoch` from batch `first` on, stacked: x [K, N, ...], y [K, N]."""
        p = self.protocol
        seeds = [m.data_seed for m in self.members]
        if isinstance(self.data, InMemoryDataset):  # one gather and augmentation for all members
            batches = self.data.train_epoch_members(epoch, p.batch_size, seeds, start=first, augment=p.augment,
                                                    part=distributed.data_part())
        else:
            batches = _stacked([self.data.train_epoch(epoch, p.batch_size, s, start=first, augment=p.augment,
                                                      **distributed.data_part_kwargs()) for s in seeds])
        for x, y in batches:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def evaluate(self, batch_size: int) -> list[tuple[float, float]]:
        """Every member's test metrics, from one fused evaluation."""
        distributed.broadcast_module_buffers(self.net)  # per-rank BN statistics: rank 0's, as saved
        return evaluate_fused(self.net, self.data, batch_size, self.device, self.precision)

    def member_state(self, i: int) -> tuple[_StateView, _StateView]:
        """What a checkpoint of member i saves: its weights and its optimiser state, cut out of the fused ones."""
        return (_StateView(lambda: self.net.member_state(i)), _StateView(lambda: self.optimizer.member_state_dict(i)))

    def finish(self, i: int) -> None:
        """Member i's model gets its final weights."""
        self.members[i].model.load_state_dict(self.net.member_state(i))
