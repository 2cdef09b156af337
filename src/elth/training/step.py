"""One training step on one batch, and the hooks a controller (dynamic sparse training) gets.

`SGDStep` is the only place that runs forward, backward and the optimiser: a faster or distributed
step replaces it and leaves the rest of the loop (resume, batches, logging) as it is.
"""
from __future__ import annotations

from typing import Iterable, runtime_checkable
from typing import Protocol as TypingProtocol

import torch
import torch.nn.functional as F
from torch import nn

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
    ):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.masker, self.controller = masker, controller

    def __call__(self, step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lr = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = prepare_input(x, self.device, self.channels_last)
        y = y.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
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
        return self.data.train_epoch(epoch, self.batch_size, self.data_seed, start=start, augment=self.augment)
