"""One training step on one batch, and the hooks a controller (dynamic sparse training) gets.

`SGDStep` is the only place that runs forward, backward and the optimiser: a faster step replaces it
and leaves the rest of the loop (resume, batches, logging) as it is. With several ranks it runs the
DDP-wrapped model (`net`) on the rank's share of the global batch, the loss scaled so that DDP's
gradient average is the gradient of the mean loss over the global batch.
`DivergenceCheck` stops a run at its first non-finite loss (or weights) with `TrainingDiverged`.
"""
from __future__ import annotations

from typing import Iterable, runtime_checkable
from typing import Protocol as TypingProtocol

import torch
import torch.nn.functional as F
from torch import nn

from elth.errors import ElthError
from elth.training import distributed
from elth.training.device import autocast, prepare_input
from elth.training.masking import GradientMask
from elth.training.protocol import LRSchedule


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
        if self.controller is None:
            self.optimizer.step()
        else:
            if self.controller.after_backward(step):
                self.optimizer.step()
            self.controller.after_step(step)
        return loss, logits, y


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
        return min(self.batch_size, self.data.num_train - batch * self.batch_size)


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
    """The first step whose training loss is NaN or infinite, and whether the weights are still finite.

    On the CPU every loss is looked at as soon as it is computed (reading a CPU scalar costs
    nothing). On accelerators the first bad step is kept on the device and read every CHECK_EVERY
    steps and before every checkpoint, so no step waits for the host; the error still names the
    first bad step. Steps are counted from 1 (step t + 1 is the update at global step index t).
    With several ranks each rank sees only its share's loss, so the ranks could stop at different
    steps and leave the others waiting in a collective: there the flag is kept as on accelerators and
    its reads are all-reduced (every rank reads at the same steps), so all ranks stop together.
    """

    def __init__(self, device: torch.device, schedule: LRSchedule, eager: bool | None = None):
        self.schedule = schedule
        if eager is None:
            eager = device.type == "cpu" and not distributed.is_active()
        self.eager = eager
        self.first_bad = None if self.eager else torch.full((), -1, dtype=torch.int64, device=device)
        self.steps = 0

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        """After the update at global step index `step` whose loss was `loss`."""
        if self.eager:
            if not bool(torch.isfinite(loss.detach())):
                self._raise(step, f"the training loss is {float(loss.detach())}")
            return
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)
        self.steps += 1
        if self.steps % CHECK_EVERY == 0:
            self.check_loss()

    def check_loss(self) -> None:
        """Raise if any loss so far was not finite (one host read on accelerators; nothing on the CPU)."""
        if self.first_bad is None:
            return
        bad = self.first_bad
        if distributed.is_active():  # the earliest bad step of any rank, on every rank
            bad = torch.where(bad < 0, torch.full_like(bad, NO_BAD_STEP), bad)
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MIN)
            bad = torch.where(bad == NO_BAD_STEP, torch.full_like(bad, -1), bad)
        if (first := int(bad)) >= 0:
            self._raise(first, "the training loss is not finite")

    def check_weights(self, model: nn.Module, step: int) -> None:
        """Raise if a parameter of `model`, after global step index `step`, is NaN or infinite."""
        self.check_loss()
        named = list(model.named_parameters())
        if not named:
            return
        finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).tolist()  # one host read
        for (name, _), ok in zip(named, finite):
            if not ok:
                self._raise(step, f"the weights of {name} are not finite")

    def _raise(self, step: int, what: str) -> None:
        raise TrainingDiverged(step + 1, what, self.schedule(step))
