"""The training loop: SGD from any global step to any other, exactly resumable.

The learning rate and the batch of every step are functions of the global step alone (epoch =
step // iterations_per_epoch, batch = step % iterations_per_epoch), so a run can stop and continue
anywhere. With `out_dir`, the optimiser state travels in a checkpoint written at the end of every
epoch and at the last step: a killed run resumes from it and ends with the same weights, bit for
bit, as one that never stopped.

Speed: conv nets run in channels_last memory format; the optimiser step is one fused kernel; loss
and accuracy are summed on the device and read only at log points (no host sync per step); masks
are one fused multiply of the gradients; cuDNN autotuning is on for CUDA; on CPUs, freed
activation memory stays with the process (`allocator`); bf16 autocast is optional.

Controllers (dynamic sparse training): `train(..., controller=c)` hands the step to an object
that follows `TrainingController`. The loop calls `c.attach(model, optimizer)` once (weights on the
device, before a checkpoint is resumed), then at every global step t (0-based, the step the LR
schedule uses): forward and backward; `c.after_backward(t)` with the dense
gradients still in `.grad` (it returns False to skip this step's optimiser update, as RigL does
on its mask-update steps); the optimiser step; `c.after_step(t)`. `c.state_dict()` is saved in
every checkpoint and handed back through `c.load_state_dict()` on resume, and `c.hparams()` joins
the checkpoint's key, so a checkpoint of other controller settings is refused. A controller owns
the sparsity, so it cannot be combined with a fixed `mask`. Without a controller the loop does
exactly what it did before (no extra work per step).

Divergence: the first step whose loss is not finite (and non-finite weights before any checkpoint
or result) stops the run with `TrainingDiverged`, naming the step and its learning rate; with
`out_dir`, `result.json` then records `{"status": "failed", "reason": "diverged", ...}` and no
checkpoint of the diverged weights is written.

One path for every run: `train_group(members, ...)` trains K runs of one model and protocol, and
`train` is a group of one. The epoch loop, log points, evaluations, checkpoints and divergence
handling below are the same for every group; what one group's step is comes from its engine:
`lone.LoneEngine` (K = 1: the model itself, `step.SGDStep`) or `fused.engine.FusedEngine` (K > 1:
one fused network, see there). A fused member therefore ends as its lone run would, by
construction. The pieces: `resume.RunFiles` (the run directory: key, checkpoint, run.json,
result.json), the engine's step and batches, `progress.Progress` (running sums, log points, the bar).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from elth.errors import ElthError
from elth.training import distributed
from elth.training.device import PRECISIONS, default_device
from elth.training.fused.engine import FusedEngine, check_controllers
from elth.training.fused.network import FusionError
from elth.training.fused.sizing import cpu_members_at_once
from elth.training.lone import LoneEngine, evaluate, make_optimizer, place_model
from elth.training.masking import GradientMask
from elth.training.member import Member
from elth.training.progress import Progress
from elth.training.protocol import LRSchedule, Protocol, ProtocolError, parse_steps
from elth.training.resume import RunFiles, TrainResult, run_key
from elth.training.step import (
    DivergenceCheck,
    TrainingController,
    TrainingDiverged,
    examples_in_batch,
    steps_by_epoch,
)

__all__ = ["PRECISIONS", "Member", "TrainResult", "TrainingController", "TrainingDiverged", "default_device",
           "evaluate", "make_optimizer", "train", "train_group"]


def resolve_span(
    data, protocol: Protocol, start_step: int, end_step: int | None, eval_every: str | None, precision: str, device
) -> tuple[torch.device, tuple[int, int, int, int | None]]:
    """The checked settings of a training: its device, and (iterations per epoch, first step, end
    step, steps between test evaluations or None) with `end_step` None meaning the protocol's end."""
    if precision not in PRECISIONS:
        raise ElthError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    device = torch.device(device) if device is not None else default_device()
    ipe = data.iterations_per_epoch(protocol.batch_size)
    end = protocol.total_steps(ipe) if end_step is None else int(end_step)
    start_step = int(start_step)
    if start_step < 0 or end < start_step:
        raise ProtocolError(f"cannot train from step {start_step} to step {end}")
    eval_interval = None if eval_every is None else parse_steps(eval_every, ipe)
    if eval_interval == 0:
        raise ProtocolError(f"the evaluation interval must be a positive number of steps such as 1ep or 500it, got {eval_every!r}")
    return device, (ipe, start_step, end, eval_interval)


def train(
    model: nn.Module,
    data,
    protocol: Protocol,
    *,
    data_seed: int = 0,
    start_step: int = 0,
    end_step: int | None = None,
    mask: dict[str, torch.Tensor] | None = None,
    out_dir: str | Path | None = None,
    eval_every: str | None = "1ep",
    precision: str = "fp32",
    device=None,
    progress: bool = True,
    desc: str = "",
    callback: Callable[[int, nn.Module], None] | None = None,
    eval_batch_size: int = 1000,
    controller: TrainingController | None = None,
) -> TrainResult:
    """Train `model` (holding the weights of global step `start_step`) in place up to `end_step`.

    `end_step` defaults to the protocol's length. `mask` (name -> 0/1 tensor) keeps pruned weights
    and their momentum exactly zero. With `out_dir`, checkpoints (every epoch and at the end),
    `metrics.jsonl`, `run.json` and `result.json` are written there, a compatible checkpoint is
    resumed, and a run already finished returns its recorded result (the model gets its final
    weights). `eval_every` ("1ep", "500it", None = only at the end) sets test evaluations.
    `callback(step, model)` runs after every optimiser step (e.g. to keep the weights of a rewind
    step); it must not change the weights. `controller` (e.g. RigL or DPF) changes the weights and
    the mask during training through the hooks of `TrainingController`; not together with `mask`.
    Raises `TrainingDiverged` at the first non-finite loss (see the module's docstring).
    """
    [result] = train_group(
        [Member(model, data_seed, mask, out_dir, controller)], data, protocol, start_step=start_step,
        end_step=end_step, eval_every=eval_every, precision=precision, device=device, progress=progress, desc=desc,
        eval_batch_size=eval_batch_size, callback=callback,
    )
    if isinstance(result, TrainingDiverged):
        raise result
    return result


def train_group(
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
    callback: Callable[[int, nn.Module], None] | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Train every member from global step `start_step` to `end_step` (default: the protocol's
    end); the results in member order, each what `train` returns for it alone (and each model
    ends with its final weights), or the `TrainingDiverged` error `train` would raise.

    `members_at_once`: the most members in one fused network (default: all of them on
    accelerators; on CPUs `cpu_members_at_once`, beyond which a CPU trains them more slowly
    than one by one); a larger group trains as several fused networks, one after another.
    A finished member is left out; members whose checkpoints stopped at different steps train in
    separate groups (each group starts at one step). `callback`: only for a group of one."""
    device, (ipe, start_step, end, eval_interval) = resolve_span(
        data, protocol, start_step, end_step, eval_every, precision, device)
    if not members:
        return []
    check_split(data, protocol.batch_size)
    outs = [Path(m.out_dir).resolve() for m in members if m.out_dir is not None]
    if len(set(outs)) != len(outs):
        raise FusionError("members of a fused group need different output directories")
    if len(members) > 1:
        if callback is not None:
            raise FusionError("a per-step callback needs a lone run (a group of one)")
        check_controllers([m.controller for m in members])
    if members_at_once is None:
        members_at_once = len(members) if device.type != "cpu" else cpu_members_at_once(members[0].model)
    if members_at_once < 1:
        raise FusionError(f"members_at_once must be at least 1, got {members_at_once}")
    runs = [_prepare(m, data, protocol, start_step, end, precision, device) for m in members]
    pending = [r for r in runs if r.result is None]
    schedule = LRSchedule(protocol, ipe)
    for step in sorted({r.step for r in pending}):
        group = [r for r in pending if r.step == step]
        for first in range(0, len(group), members_at_once):
            part = group[first : first + members_at_once]
            if len(part) == 1:
                r = part[0]
                m = r.member
                engine = LoneEngine(m.model, r.optimizer, data, protocol, data_seed=m.data_seed, masker=r.masker,
                                    controller=m.controller, schedule=schedule, precision=precision, device=device,
                                    callback=callback)
            else:
                engine = FusedEngine([r.member for r in part], [r.optimizer.state_dict() for r in part], data,
                                     protocol, schedule, precision, device)
            _train_span(engine, part, data, protocol, schedule, ipe, start_step, end, eval_interval,
                        progress=progress, desc=desc, eval_batch_size=eval_batch_size, device=device)
    return [r.result for r in runs]


@dataclass
class _Run:
    """A member's place in its group: resume step, run files, optimiser (resumed), result."""

    member: Member
    step: int
    optimizer: torch.optim.Optimizer
    seconds_before: float = 0.0
    files: RunFiles | None = None
    result: TrainResult | TrainingDiverged | None = None
    #: the member's mask over its model's parameters (None: no mask)
    masker: GradientMask | None = None


def _prepare(member: Member, data, protocol: Protocol, start_step: int, end: int, precision: str, device) -> _Run:
    """A run begins: the model on the device, masked, its optimiser made, its controller attached, and
    resumed from its checkpoint (a finished run gets its result and is left out)."""
    model, controller = member.model, member.controller
    check_one_sparsity(member.mask, controller)
    place_model(model, device)
    masker = GradientMask(model, member.mask) if member.mask is not None else None
    if masker is not None:
        masker.apply_to_weights()
    optimizer = make_optimizer(model, protocol)
    if controller is not None:
        controller.attach(model, optimizer)
    run = _Run(member, start_step, optimizer, masker=masker)
    if member.out_dir is None:
        return run
    key = run_key(model, protocol, data, member.data_seed, member.mask, precision, controller)
    run.files = RunFiles(member.out_dir, key, model, start_step)
    resumed = run.files.resume(model, optimizer, controller, end)
    if resumed is not None:
        run.step, run.seconds_before, run.result = resumed.step, resumed.seconds, resumed.result
    return run


def _train_span(
    engine: LoneEngine | FusedEngine, runs: list[_Run], data, protocol: Protocol, schedule: LRSchedule, ipe: int,
    start_step: int, end: int, eval_interval: int | None, *, progress: bool, desc: str, eval_batch_size: int,
    device: torch.device,
) -> None:
    """The one epoch loop: the engine's K runs, all resuming at one step, trained to `end`; each
    run's `result` set (a `TrainResult`, or the `TrainingDiverged` error of a member that diverged)."""
    _Span(engine, runs, data, protocol, schedule, ipe, start_step, end, eval_interval, progress=progress,
          desc=desc, eval_batch_size=eval_batch_size, device=device).run()


class _Span:
    """One call of the epoch loop: its step, its members' progress reports, the group's last test
    evaluation (shared by every member's log point) and which members diverged."""

    def __init__(self, engine: LoneEngine | FusedEngine, runs: list[_Run], data, protocol: Protocol,
                 schedule: LRSchedule, ipe: int, start_step: int, end: int, eval_interval: int | None, *,
                 progress: bool, desc: str, eval_batch_size: int, device: torch.device):
        self.engine, self.runs, self.data, self.protocol = engine, runs, data, protocol
        self.ipe, self.end, self.eval_interval, self.eval_batch_size = ipe, end, eval_interval, eval_batch_size
        self.step = self.first_step = runs[0].step
        logs = [r.files.start(self.step, end, ipe) if r.files is not None else None for r in runs]
        self.reports = [
            Progress(
                device, schedule, ipe, start_step=start_step, step=self.step, end=end, seconds_before=r.seconds_before,
                log=log, desc=desc or engine.name, enabled=progress and i == 0 and distributed.is_main(),
                stats=engine.member_stats(i),
            )
            for i, (r, log) in enumerate(zip(runs, logs))
        ]
        self.tests: list[tuple[float, float]] | None = None
        self.divergence = DivergenceCheck(device, schedule, members=len(runs))

    def run(self) -> None:
        self.engine.module.train()
        try:
            self._steps()
            if not self._all_diverged():
                self._finish()
            for i, error in self.divergence.errors.items():
                self.runs[i].result = error
        finally:
            for report in self.reports:
                report.close()

    def _steps(self) -> None:
        """Train to `end` (or until every member diverged): log points, evaluations and checkpoints
        at the ends of epochs and at the evaluation interval."""
        engine, reports = self.engine, self.reports
        for t, (x, y), epoch_ends in steps_by_epoch(self.step, self.end, self.ipe, engine.batches):
            global_batch = examples_in_batch(self.data, self.protocol.batch_size, t % self.ipe)
            losses = engine.step(t, x, y, global_batch)
            self._end_diverged(self.divergence.diverged_after_step(t, losses))
            if self._all_diverged():
                return
            for report in reports:
                report.count(global_batch)
            self.step = step = t + 1
            engine.after_step(step)
            evaluate_now = step == self.end or (self.eval_interval is not None and step % self.eval_interval == 0)
            if epoch_ends:
                self._log_point(evaluate_now)
                if step < self.end:
                    self._save()
                    if self._all_diverged():
                        return
            elif evaluate_now:
                self._log_point(True)
            else:
                reports[0].refresh(step)

    def _finish(self) -> None:
        """The members' results (tested now if nothing trained or the last step was not evaluated),
        saved with the last checkpoint and handed to the runs that did not diverge."""
        if any(report.last_test[0] is None for report in self.reports):
            for report, test in zip(self.reports, self.engine.evaluate(self.eval_batch_size)):
                report.last_test = test
        results = [TrainResult(self.step, rep.last_test[0], rep.last_test[1], rep.train_loss, rep.clock.total())
                   for rep in self.reports]
        self._save(results)
        for i, r in enumerate(self.runs):
            if i not in self.divergence.errors:
                r.result = results[i]
                self.engine.finish(i)
                if r.files is not None:
                    r.files.write_result(results[i])

    def _end_diverged(self, new: list[int]) -> None:
        """Members just found diverged: their failure recorded, no more logs."""
        for i in new:
            if self.runs[i].files is not None:
                self.runs[i].files.write_failure(self.divergence.errors[i].record())
            self.reports[i].log = None

    def _all_diverged(self) -> bool:
        return len(self.divergence.errors) == len(self.runs)

    def _test_metrics(self, i: int) -> Callable[[], tuple[float, float]]:
        """Member i's test metrics, read when its log point asks: one evaluation serves the group."""
        def read() -> tuple[float, float]:
            if self.tests is None:
                self.tests = self.engine.evaluate(self.eval_batch_size)
            return self.tests[i]
        return read

    def _log_point(self, evaluate_now: bool) -> None:
        self.tests = None
        for i, report in enumerate(self.reports):
            report.log_point(self.step, self._test_metrics(i) if evaluate_now else None)

    def _save(self, results: list[TrainResult] | None = None) -> None:
        """A checkpoint of every member that has not diverged (with its result at the end)."""
        engine = self.engine
        if self.step > self.first_step:  # never a checkpoint or a result of diverged weights
            self._end_diverged(self.divergence.diverged_weights(engine.module.named_parameters(), self.step - 1))
        if self._all_diverged():
            return
        distributed.broadcast_module_buffers(engine.module)
        distributed.check_identical(dict(engine.module.named_parameters()), f"the weights at step {self.step}")
        for i, r in enumerate(self.runs):
            if r.files is not None and i not in self.divergence.errors:
                model_state, optimizer_state = engine.member_state(i)
                r.files.save(self.step, self.reports[i].clock.total(), model_state, optimizer_state,
                             r.member.controller, results[i] if results is not None else None)


def check_one_sparsity(mask, controller: TrainingController | None) -> None:
    """A run's sparsity comes from a fixed mask or from a controller that manages it, not both."""
    if controller is not None and mask is not None:
        raise ElthError("give either a fixed mask or a controller that manages the sparsity, not both")


def check_split(data, batch_size: int) -> None:
    """With several ranks, every rank needs at least one example of every batch (the last one too)."""
    ranks = distributed.world_size()
    if ranks == 1:
        return
    smallest = min(batch_size, data.num_train - (data.iterations_per_epoch(batch_size) - 1) * batch_size)
    if smallest < ranks:
        raise distributed.DistributedError(
            f"a batch of {smallest} examples (batch size {batch_size}, {data.num_train} training examples) "
            f"cannot be split over {ranks} ranks"
        )
