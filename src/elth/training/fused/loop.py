"""Training K runs of one model and protocol as one fused network, each as if it ran alone.

`train_fused(members, data, protocol, ...)` is `train` for K members at once. Each `Member` has its
own model (starting weights), mask, data seed and output directory; what differs between members
stays per member by construction:

- data: each member's batches come from its own `data.train_epoch(..., seed)` (its own order and
  augmentation); the K batches of a step are stacked, one member per channel group;
- weights, masks, BN statistics, momentum and weight decay: every fused tensor is the members'
  tensors side by side, every op of the network is per channel group or element-wise, the loss is
  the sum of the members' own mean losses (so each member's gradient is its own) and SGD steps each
  member's part on its own (`MemberSGD`);
- the LR schedule is a function of the global step, the same for every member.

Each member's output directory gets what `train` writes there (`run.json`, `metrics.jsonl`,
`checkpoint.pt` every epoch and at the end, `result.json`), through the same `RunFiles` and
`Progress`, so a member's run can be resumed by `train` alone and a fused group resumes from its
members' checkpoints. A member whose run is already finished is left out; members whose
checkpoints stopped at different steps train in separate groups (each group starts at one step).

A member whose training loss (or weights) stops being finite ends as `train` ends such a run:
its `result.json` records the failure, no checkpoint of its diverged weights is written, and its
entry in the returned list is the `TrainingDiverged` error `train` would raise. Its NaNs reach no
other member, so the group trains on.

Over several ranks (torchrun) every rank trains the fused network (DDP) on its share of each
member's batch, as `train` does for one model.

A member may bring a controller (dynamic sparse training) as `train(..., controller=)` takes one.
Its class must know how to step the members' controllers together (`fuse(controllers, net,
optimizer)`, as DPF's and RigL's do); the members' controllers keep their own state, saved in each
member's checkpoint as `train` saves it, so a fused run and a lone one resume each other's
checkpoints. Controllers without `fuse` and per-step callbacks are not fused; those runs train
with `train`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from elth.data.base import InMemoryDataset
from elth.errors import ElthError
from elth.training import distributed
from elth.training.device import autocast, use_channels_last
from elth.training.fused.network import FusedNetwork, FusionError, stack_members
from elth.training.fused.optimizer import MemberSGD
from elth.training.fused.sizing import cpu_members_at_once
from elth.training.loop import check_one_sparsity, check_split, make_optimizer, place_model, resolve_span, train
from elth.training.masking import GradientMask
from elth.training.metrics import GroupStats
from elth.training.progress import Progress
from elth.training.protocol import LRSchedule, Protocol
from elth.training.resume import RunFiles, TrainResult, run_key
from elth.training.step import (
    DivergenceCheck,
    TrainingController,
    TrainingDiverged,
    controlled_step,
    examples_in_batch,
    steps_by_epoch,
)


@dataclass
class Member:
    """One run of a fused group: `model` holds its starting weights and gets its final ones."""

    model: nn.Module
    data_seed: int = 0
    mask: dict[str, torch.Tensor] | None = None
    out_dir: str | Path | None = None
    #: A `TrainingController` not yet attached (its class fuses controllers; see the module's docstring).
    controller: TrainingController | None = None


@dataclass
class _Run:
    """A member's place while its group trains: resume step, run files, saved optimiser state."""

    member: Member
    step: int
    seconds_before: float = 0.0
    files: RunFiles | None = None
    optimizer_state: dict | None = None
    result: TrainResult | TrainingDiverged | None = None


class _StateView:
    """Something with a `state_dict()` (what `RunFiles.save` reads) that returns `fn()`."""

    def __init__(self, fn):
        self.state_dict = fn


def train_fused(
    members: list[Member],
    data,
    protocol: Protocol,
    *,
    start_step: int = 0,
    end_step: int | None = None,
    eval_every: str | None = "1ep",
    precision: str = "fp32",
    device=None,
    progress: bool = True,
    desc: str = "",
    eval_batch_size: int = 1000,
    members_at_once: int | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Train every member from global step `start_step` to `end_step` (default: the protocol's
    end); the results in member order, each what `train` alone returns for it (and each model
    ends with its final weights), or the `TrainingDiverged` it would raise.

    `members_at_once`: the most members in one fused network (default: all of them on
    accelerators; on CPUs `cpu_members_at_once`, beyond which a CPU trains them more slowly
    than one by one); a larger group trains as several fused networks, one after another."""
    device, (ipe, start_step, end, eval_interval) = resolve_span(
        data, protocol, start_step, end_step, eval_every, precision, device)
    if not members:
        return []
    check_split(data, protocol.batch_size)
    outs = [Path(m.out_dir).resolve() for m in members if m.out_dir is not None]
    if len(set(outs)) != len(outs):
        raise FusionError("members of a fused group need different output directories")

    if len(members) == 1:
        # A group of one is a lone run.
        m = members[0]
        try:
            return [train(m.model, data, protocol, data_seed=m.data_seed, start_step=start_step, end_step=end_step,
                          mask=m.mask, out_dir=m.out_dir, eval_every=eval_every, precision=precision, device=device,
                          progress=progress, desc=desc, eval_batch_size=eval_batch_size, controller=m.controller)]
        except TrainingDiverged as e:
            return [e]
    if members_at_once is None:
        members_at_once = len(members) if device.type != "cpu" else cpu_members_at_once(members[0].model)
    if members_at_once < 1:
        raise FusionError(f"members_at_once must be at least 1, got {members_at_once}")
    _check_controllers([m.controller for m in members])
    runs = [_prepare(m, data, protocol, start_step, end, precision, device) for m in members]
    pending = [r for r in runs if r.result is None]
    for step in sorted({r.step for r in pending}):
        group = [r for r in pending if r.step == step]
        for first in range(0, len(group), members_at_once):
            _Group(group[first : first + members_at_once], data, protocol, ipe, precision, device).train(
                start_step, step, end, eval_interval, progress, desc, eval_batch_size
            )
    return [r.result for r in runs]


def _check_controllers(controllers: list[TrainingController | None]) -> None:
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


def _prepare(member: Member, data, protocol: Protocol, start_step: int, end: int, precision: str, device) -> _Run:
    """As `train` begins a run: the model on the device, masked, its controller attached, and
    resumed from its checkpoint (a finished run gets its result and is left out)."""
    model, controller = member.model, member.controller
    check_one_sparsity(member.mask, controller)
    place_model(model, device)
    if member.mask is not None:
        GradientMask(model, member.mask).apply_to_weights()
    optimizer = make_optimizer(model, protocol)
    if controller is not None:
        controller.attach(model, optimizer)
    run = _Run(member, start_step)
    if member.out_dir is None:
        return run
    key = run_key(model, protocol, data, member.data_seed, member.mask, precision, controller)
    run.files = RunFiles(member.out_dir, key, model, start_step)
    resumed = run.files.resume(model, optimizer, controller, end)
    if resumed is not None:
        run.step, run.seconds_before, run.result = resumed.step, resumed.seconds, resumed.result
        run.optimizer_state = optimizer.state_dict()
    return run


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


class _Group:
    """Members resuming at one step, fused into one network."""

    def __init__(self, runs: list[_Run], data, protocol: Protocol, ipe: int, precision: str, device: torch.device):
        self.runs, self.data, self.protocol, self.ipe = runs, data, protocol, ipe
        self.precision, self.device = precision, device
        models = [r.member.model for r in runs]
        self.net = FusedNetwork(models)
        if use_channels_last(models[0], device):
            self.net.to_channels_last()
        fused_mask = _fused_mask(self.net, [r.member.mask for r in runs])
        self.masker = GradientMask(self.net, fused_mask) if fused_mask is not None else None
        self.optimizer = MemberSGD(self.net, models[0], protocol)
        self.optimizer.load_member_state_dicts([r.optimizer_state for r in runs])
        controllers = [r.member.controller for r in runs]
        # The members' controllers, attached to their own models, now step the fused network's tensors.
        self.controller = (type(controllers[0]).fuse(controllers, self.net, self.optimizer)
                           if controllers[0] is not None else None)
        self.schedule = LRSchedule(protocol, ipe)
        # With several ranks: DDP over the fused network, each rank on its share of every member's batch.
        self.ddp = distributed.data_parallel(self.net, device)

    def _step(self, step: int, x: torch.Tensor, y: torch.Tensor, global_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`global_batch`: examples of each member's whole batch (y holds this rank's share)."""
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
        return losses, logits

    def _batches(self, epoch: int, first: int):
        """The members' batches of `epoch` from batch `first` on, stacked: x [K, N, ...], y [K, N]."""
        p = self.protocol
        seeds = [r.member.data_seed for r in self.runs]
        if isinstance(self.data, InMemoryDataset):  # one gather and augmentation for all members
            batches = self.data.train_epoch_members(epoch, p.batch_size, seeds, start=first, augment=p.augment,
                                                    part=distributed.data_part())
        else:
            batches = _stacked([self.data.train_epoch(epoch, p.batch_size, s, start=first, augment=p.augment,
                                                      **distributed.data_part_kwargs()) for s in seeds])
        for x, y in batches:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train(self, start_step: int, step: int, end: int, eval_interval: int | None, progress: bool, desc: str, eval_batch_size: int) -> None:
        net, runs, k = self.net, self.runs, len(self.runs)
        logs = [r.files.start(step, end, self.ipe) if r.files is not None else None for r in runs]
        stats = GroupStats(self.device, k)  # every member's running loss and accuracy, summed at once
        reports = [
            Progress(
                self.device, self.schedule, self.ipe, start_step=start_step, step=step, end=end,
                seconds_before=r.seconds_before, log=log, desc=desc or f"{net.name} x{k} fused",
                enabled=progress and i == 0 and distributed.is_main(), stats=stats.member(i),
            )
            for i, (r, log) in enumerate(zip(runs, logs))
        ]
        tests: list[tuple[float, float]] | None = None
        divergence = DivergenceCheck(self.device, self.schedule, members=k)

        def end_diverged(new: list[int]) -> None:
            """Members just found diverged: record the failure as `train` does; no more logs."""
            for i in new:
                if runs[i].files is not None:
                    runs[i].files.write_failure(divergence.errors[i].record())
                reports[i].log = None

        def evaluate() -> list[tuple[float, float]]:
            distributed.broadcast_module_buffers(net)  # per-rank BN statistics: rank 0's, as saved
            return evaluate_fused(net, self.data, eval_batch_size, self.device, self.precision)

        def test_metrics(i: int):
            # One fused evaluation serves every member's log point.
            def read() -> tuple[float, float]:
                nonlocal tests
                if tests is None:
                    tests = evaluate()
                return tests[i]
            return read

        def log_point(evaluate_now: bool) -> None:
            nonlocal tests
            tests = None
            for i, report in enumerate(reports):
                report.log_point(step, test_metrics(i) if evaluate_now else None)

        def save(results: list[TrainResult] | None = None) -> None:
            if step > first_step:
                end_diverged(divergence.diverged_weights(net.net.named_parameters(), step - 1))  # never a checkpoint of diverged weights
            distributed.broadcast_module_buffers(net)
            distributed.check_identical(dict(net.named_parameters()), f"the fused weights at step {step}")
            for i, r in enumerate(runs):
                if r.files is not None and i not in divergence.errors:
                    r.files.save(
                        step, reports[i].clock.total(), _StateView(lambda i=i: net.member_state(i)),
                        _StateView(lambda i=i: self.optimizer.member_state_dict(i)), r.member.controller,
                        results[i] if results is not None else None,
                    )

        first_step = step
        net.train()
        try:
            for t, (x, y), epoch_ends in steps_by_epoch(step, end, self.ipe, self._batches):
                global_batch = examples_in_batch(self.data, self.protocol.batch_size, t % self.ipe)
                losses, logits = self._step(t, x, y, global_batch)
                end_diverged(divergence.diverged_after_step(t, losses))
                stats.add(losses, logits, y)
                for report in reports:
                    report.count(global_batch)
                step = t + 1
                evaluate_now = step == end or (eval_interval is not None and step % eval_interval == 0)
                if epoch_ends:
                    log_point(evaluate_now)
                    if step < end:
                        save()
                elif evaluate_now:
                    log_point(True)
                else:
                    reports[0].refresh(step)
            if any(report.last_test[0] is None for report in reports):
                tests = evaluate()
                for report, test in zip(reports, tests):
                    report.last_test = test
            results = [
                TrainResult(step, rep.last_test[0], rep.last_test[1], rep.train_loss, rep.clock.total())
                for rep in reports
            ]
            save(results)
            for i, r in enumerate(runs):
                if i in divergence.errors:
                    r.result = divergence.errors[i]
                    continue
                r.result = results[i]
                r.member.model.load_state_dict(net.member_state(i))
                if r.files is not None:
                    r.files.write_result(results[i])
        finally:
            for report in reports:
                report.close()

