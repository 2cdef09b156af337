"""One training step on one batch, and the hooks a controller (dynamic sparse training) gets.

`SGDStep` is the only place that runs forward, backward and the optimiser: a faster step replaces it
and leaves the rest of the loop (resume, batches, logging) as it is. With several ranks it runs the
DDP-wrapped model (`net`) on the rank's share of the global batch, the loss scaled so that DDP's
gradient average is the gradient of the mean loss over the global batch.
`DivergenceCheck` stops a run at its first non-finite loss (or weights) with `TrainingDiverged`.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, runtime_checkable
from typing import Protocol as TypingProtocol

import torch
import torch.nn.functional as F
from torch import nn

from elth.errors import ElthError
from elth.training import distributed
from elth.training.device import autocast, prepare_input
from elth.training.masking import GradientMask
from elth.training.protocol import LRSchedule

Batch = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class TrainingController(TypingProtocol):
    """What `train(..., controller=)` calls (see `elth.training.loop` for when)."""

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...

    def after_backward(self, step: int) -> bool: ...

    def after_step(self, step: int) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def hparams(self) -> dict: ...


class SGDStep:
    """Global step t on batch (x, y): LR of t, forward and backward, gradient mask, optimiser update.

    Returns (loss, logits, labels on the device) for the running statistics; nothing is read back
    to the host.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        device: torch.device,
        precision: str,
        channels_last: bool,
        masker: GradientMask | None = None,
        controller: TrainingController | None = None,
        net: nn.Module | None = None,
    ):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.masker, self.controller = masker, controller
        self.net = model if net is None else net

    def __call__(
        self, step: int, x: torch.Tensor, y: torch.Tensor, global_batch: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`global_batch`: the examples of the global batch when (x, y) is one rank's share of it."""
        lr = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = prepare_input(x, self.device, self.channels_last)
        y = y.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        scale = 1.0 if global_batch is None else distributed.loss_scale(y.shape[0], global_batch)
        (loss if scale == 1.0 else loss * scale).backward()
        if self.masker is not None:
            self.masker.apply_to_gradients()
        controlled_step(self.optimizer, self.controller, step)
        return loss, logits, y


def controlled_step(optimizer, controller: TrainingController | None, step: int) -> None:
    """The optimiser's update of global step `step` with a controller's hooks around it (if any)."""
    if controller is None:
        optimizer.step()
        return
    if controller.after_backward(step):
        optimizer.step()
    controller.after_step(step)


class EpochBatches:
    """The training batches of one epoch from batch `start` on, a function of (data seed, epoch) alone,
    so a resumed run sees the batches it would have seen."""

    def __init__(self, data, batch_size: int, data_seed: int, augment: bool):
        self.data, self.batch_size, self.data_seed, self.augment = data, batch_size, data_seed, augment

    def __call__(self, epoch: int, start: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """With several ranks, this rank's share of each batch (decoded and augmented as in the whole)."""
        return self.data.train_epoch(epoch, self.batch_size, self.data_seed, start=start, augment=self.augment,
                                     **distributed.data_part_kwargs())

    def size(self, batch: int) -> int:
        """Examples in batch `batch` of an epoch (all ranks' shares together)."""
        return examples_in_batch(self.data, self.batch_size, batch)


def examples_in_batch(data, batch_size: int, batch: int) -> int:
    """Examples in batch `batch` of an epoch of `data` (the last one may be short)."""
    return min(batch_size, data.num_train - batch * batch_size)


def steps_by_epoch(
    step: int, end: int, ipe: int, batches: Callable[[int, int], Iterable[Batch]]
) -> Iterator[tuple[int, Batch, bool]]:
    """(global step index, its batch, whether the step ends an epoch or the run) for every step from
    `step` to `end`; each epoch's batches come from `batches(epoch, first batch)`."""
    while step < end:
        epoch, first = divmod(step, ipe)
        stop = min(end, (epoch + 1) * ipe)
        for batch in batches(epoch, first):
            yield step, batch, step + 1 == stop
            step += 1
            if step >= stop:
                break
        if step < stop:
            raise ElthError(f"the dataset ended epoch {epoch} after step {step}, before step {stop}")


class TrainingDiverged(ElthError):
    """The loss (or the weights) stopped being finite: the run cannot give a meaningful result."""

    def __init__(self, step: int, what: str, lr: float):
        self.step, self.what, self.lr = step, what, lr
        super().__init__(
            f"training diverged: {what} at step {step} (learning rate {lr:g}); the learning rate is likely too "
            "high for this model and batch size (try a lower --lr, or a warmup)"
        )

    def __reduce__(self):  # picklable, so a worker process can hand it back
        return (type(self), (self.step, self.what, self.lr))

    def record(self) -> dict:
        """The failure as a run records it (strict JSON)."""
        return {"status": "failed", "reason": "diverged", "step": self.step, "what": self.what, "lr": self.lr,
                "error": str(self)}


#: On accelerators, steps between reads of the device-side divergence flag (each read waits for the device).
CHECK_EVERY = 50
#: Stands for "no bad step" while the ranks' first bad steps are reduced by their minimum.
NO_BAD_STEP = 2**62


class DivergenceCheck:
    """The first step whose training loss is NaN or infinite, and whether the weights are still
    finite: for one run, or for each of the K members of a fused group (`members=K`, losses [K],
    every parameter [K, ...] with member k's part at index k).

    On the CPU every loss is looked at as soon as it is computed (reading a CPU scalar costs
    nothing). On accelerators each member's first bad step is kept on the device and read every
    CHECK_EVERY steps and before every checkpoint, so no step waits for the host; the error still
    names the first bad step. Steps are counted from 1 (step t + 1 is the update at global step
    index t). With several ranks each rank sees only its share's loss, so the ranks could stop at
    different steps and leave the others waiting in a collective: there the flags are kept as on
    accelerators and their reads are all-reduced (every rank reads at the same steps), so all ranks
    stop together.

    `diverged_*` return the members found diverged just now (their errors are in `errors`); a lone
    run uses `after_step`, `check_loss` and `check_weights`, which raise the error instead.
    """

    def __init__(self, device: torch.device, schedule: LRSchedule, eager: bool | None = None, members: int = 1):
        self.schedule, self.members = schedule, members
        if eager is None:
            eager = device.type == "cpu" and not distributed.is_active()
        self.eager = eager
        self.first_bad = None if self.eager else torch.full((members,), -1, dtype=torch.int64, device=device)
        self.errors: dict[int, TrainingDiverged] = {}
        self.steps = 0

    def diverged_after_step(self, step: int, losses: torch.Tensor) -> list[int]:
        """After the update at global step index `step`, whose loss(es) were `losses`."""
        losses = losses.detach().reshape(self.members)
        if self.eager:
            values = losses.tolist()
            return self._new((i, step, f"the training loss is {v}") for i, v in enumerate(values) if not math.isfinite(v))
        bad = ~torch.isfinite(losses) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)
        self.steps += 1
        return self.diverged_so_far() if self.steps % CHECK_EVERY == 0 else []

    def diverged_so_far(self) -> list[int]:
        """Members with a non-finite loss so far (one host read on accelerators; nothing on the CPU)."""
        if self.first_bad is None:
            return []
        bad = self.first_bad
        if distributed.is_active():  # the earliest bad step of any rank, on every rank
            bad = torch.where(bad < 0, torch.full_like(bad, NO_BAD_STEP), bad)
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MIN)
            bad = torch.where(bad == NO_BAD_STEP, torch.full_like(bad, -1), bad)
        return self._new((i, first, "the training loss is not finite") for i, first in enumerate(bad.tolist()) if first >= 0)

    def diverged_weights(self, named: Iterable[tuple[str, torch.Tensor]], step: int) -> list[int]:
        """Members whose loss so far, or whose weights after global step index `step`, are not finite."""
        new = self.diverged_so_far()
        named = list(named)
        if named:
            # [parameters, members], read back at once
            finite = torch.stack([torch.isfinite(p.detach().reshape(self.members, -1)).all(1) for _, p in named]).tolist()
            new += self._new((i, step, f"the weights of {name} are not finite")
                             for (name, _), member_ok in zip(named, finite) for i, ok in enumerate(member_ok) if not ok)
        return new

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        self._raise(self.diverged_after_step(step, loss))

    def check_loss(self) -> None:
        """Raise if any loss so far was not finite."""
        self._raise(self.diverged_so_far())

    def check_weights(self, model: nn.Module, step: int) -> None:
        """Raise if a loss so far, or a parameter of `model` after global step index `step`, is not finite."""
        self._raise(self.diverged_weights(model.named_parameters(), step))

    def _new(self, found: Iterable[tuple[int, int, str]]) -> list[int]:
        """Record (member, step index, what) for members not already diverged; those members."""
        new = []
        for member, step, what in found:
            if member not in self.errors:
                self.errors[member] = TrainingDiverged(step + 1, what, self.schedule(step))
                new.append(member)
        return new

    def _raise(self, new: list[int]) -> None:
        if new:
            raise self.errors[new[0]]
