"""One model training on its own: the group of one of `elth.training.loop`.

`LoneEngine` is what the loop drives for a single run: the model itself trains (no fused network),
its optimiser is the plain `make_optimizer` SGD, its step is `step.SGDStep`, its batches
`step.EpochBatches` and its test metrics `evaluate`. `elth.training.fused.engine.FusedEngine` offers
the same interface for K members fused into one network.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from elth.errors import ElthError
from elth.training import distributed
from elth.training.allocator import tune_malloc
from elth.training.device import (
    autocast,
    model_device,
    prepare_input,
    use_channels_last,
)
from elth.training.masking import GradientMask
from elth.training.metrics import RunningStats
from elth.training.protocol import LRSchedule, Protocol
from elth.training.step import EpochBatches, SGDStep, TrainingController


@torch.no_grad()
def evaluate(
    model: nn.Module, data, batch_size: int = 1000, device=None, precision: str = "fp32"
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy loss) on the test set, in eval mode (BN running statistics).

    With several ranks the test batches are shared out round-robin (each rank loads only its own)
    and the sums all-reduced (every rank calls this, with the same weights), so each rank gets the
    metrics of the whole test set.
    """
    device = torch.device(device) if device is not None else model_device(model)
    channels_last = use_channels_last(model, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    try:
        for x, y in data.test_batches(batch_size, **distributed.data_part_kwargs()):
            x = prepare_input(x, device, channels_last)
            y = y.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            count += y.shape[0]
    finally:
        model.train(was_training)
    loss_total, correct_total, count = distributed.all_reduce_numbers([float(loss_sum), float(correct), count], device)
    if count == 0:
        raise ElthError("the dataset has no test examples to evaluate on")
    return int(correct_total) / count, loss_total / count


def make_optimizer(model: nn.Module, protocol: Protocol) -> torch.optim.SGD:
    """SGD (no Nesterov), weight decay on every parameter; one fused kernel where torch has it."""
    kwargs = dict(
        lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay, nesterov=False
    )
    params = list(model.parameters())
    try:
        return torch.optim.SGD(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(params, foreach=True, **kwargs)


def place_model(model: nn.Module, device: torch.device) -> bool:
    """Move `model` to `device` in its fastest memory format and tune the backend; True for channels_last."""
    channels_last = use_channels_last(model, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu":
        tune_malloc()
    return channels_last


class LoneEngine:
    """One run (`model`, placed, masked and resumed, with its optimiser and its `masker`) as a group of one."""

    k = 1

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, data, protocol: Protocol, *, data_seed: int,
        masker: GradientMask | None, controller: TrainingController | None, schedule: LRSchedule,
        precision: str, device: torch.device, callback: Callable[[int, nn.Module], None] | None = None,
    ):
        self.model, self.optimizer, self.data, self.precision, self.device = model, optimizer, data, precision, device
        self.name = getattr(model, "name", "train")
        self.callback = callback
        # Every rank now holds the same weights (one checkpoint); with several ranks DDP all-reduces the
        # gradients of each rank's share of the global batch.
        net = distributed.data_parallel(model, device)
        self.sgd_step = SGDStep(model, optimizer, schedule, device, precision, use_channels_last(model, device),
                                masker, controller, net=net)
        self.batches = EpochBatches(data, protocol.batch_size, data_seed, protocol.augment)
        self.stats = RunningStats(device)

    @property
    def module(self) -> nn.Module:
        """The trained module (its parameters are what the divergence check and checkpoints read)."""
        return self.model

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor, global_batch: int) -> torch.Tensor:
        """The update at global step index `step`; its loss (its running sums are added to `stats`)."""
        loss, logits, labels = self.sgd_step(step, x, y, global_batch)
        self.stats.add(loss, logits, labels)
        return loss

    def after_step(self, step: int) -> None:
        if self.callback is not None:
            self.callback(step, self.model)

    def member_stats(self, i: int) -> RunningStats:
        return self.stats

    def evaluate(self, batch_size: int) -> list[tuple[float, float]]:
        distributed.broadcast_module_buffers(self.model)  # per-rank BN statistics: rank 0's, as saved
        return [evaluate(self.model, self.data, batch_size, self.device, self.precision)]

    def member_state(self, i: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        """What a checkpoint of the member saves: something with `state_dict()` for its weights and its optimiser."""
        return self.model, self.optimizer

    def finish(self, i: int) -> None:
        """The member's model holds its final weights (it trained in place)."""
