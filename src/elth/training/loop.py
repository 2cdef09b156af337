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

The pieces: `resume.RunFiles` (the run directory: key, checkpoint, run.json, result.json),
`step.SGDStep` (one update on one batch; the part a faster or distributed step replaces),
`step.EpochBatches` (where the batches come from), `progress.Progress` (running sums, log
points, the bar). `train` below only strings them together.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from elth.errors import ElthError
from elth.training import distributed
from elth.training.allocator import tune_malloc
from elth.training.device import (
    PRECISIONS,
    autocast,
    default_device,
    model_device,
    prepare_input,
    use_channels_last,
)
from elth.training.masking import GradientMask
from elth.training.progress import Progress
from elth.training.protocol import LRSchedule, Protocol, ProtocolError, parse_steps
from elth.training.resume import RunFiles, TrainResult, run_key
from elth.training.step import (
    DivergenceCheck,
    EpochBatches,
    SGDStep,
    TrainingController,
    TrainingDiverged,
    steps_by_epoch,
)

__all__ = ["PRECISIONS", "TrainResult", "TrainingController", "TrainingDiverged", "default_device", "evaluate",
           "make_optimizer", "train"]


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
    """
    # Settings
    device, span = resolve_span(data, protocol, start_step, end_step, eval_every, precision, device)
    ipe, start_step, end, eval_interval = span
    check_one_sparsity(mask, controller)
    check_split(data, protocol.batch_size)

    # Model, optimiser, step and batches
    channels_last = place_model(model, device)
    masker = GradientMask(model, mask) if mask is not None else None
    if masker is not None:
        masker.apply_to_weights()
    optimizer = make_optimizer(model, protocol)
    if controller is not None:
        controller.attach(model, optimizer)
    schedule = LRSchedule(protocol, ipe)
    divergence = DivergenceCheck(device, schedule)
    batches = EpochBatches(data, protocol.batch_size, data_seed, protocol.augment)

    # Resume
    step, seconds_before, log, files = start_step, 0.0, None, None
    if out_dir is not None:
        files = RunFiles(out_dir, run_key(model, protocol, data, data_seed, mask, precision, controller), model, start_step)
        resumed = files.resume(model, optimizer, controller, end)
        if resumed is not None:
            if resumed.result is not None:
                return resumed.result
            step, seconds_before = resumed.step, resumed.seconds
        log = files.start(step, end, ipe)
    # Every rank now holds the same weights (one checkpoint); with several ranks DDP all-reduces the
    # gradients of each rank's share of the global batch.
    net = distributed.data_parallel(model, device)
    sgd_step = SGDStep(model, optimizer, schedule, device, precision, channels_last, masker, controller, net=net)

    def test_metrics() -> tuple[float, float]:
        distributed.broadcast_module_buffers(model)  # per-rank BN statistics: rank 0's, as saved
        return evaluate(model, data, eval_batch_size, device, precision)

    def save(result: TrainResult | None = None) -> None:
        if step > start_step:
            divergence.check_weights(model, step - 1)  # never a checkpoint or a result of a diverged run
        if files is not None:
            distributed.broadcast_module_buffers(model)
            distributed.check_identical(dict(model.named_parameters()), f"the weights at step {step}")
            files.save(step, report.clock.total(), model, optimizer, controller, result)

    # Train, epoch by epoch (a checkpoint at the end of each)
    report = Progress(
        device, schedule, ipe, start_step=start_step, step=step, end=end, seconds_before=seconds_before,
        log=log, desc=desc or getattr(model, "name", "train"), enabled=progress and distributed.is_main(),
    )
    model.train()
    try:
        for t, (x, y), epoch_ends in steps_by_epoch(step, end, ipe, batches):
            global_batch = batches.size(t % ipe)
            loss, logits, labels = sgd_step(t, x, y, global_batch)
            divergence.after_step(t, loss)
            report.after_step(loss, logits, labels, images=global_batch)
            step = t + 1
            if callback is not None:
                callback(step, model)
            evaluate_now = step == end or (eval_interval is not None and step % eval_interval == 0)
            if epoch_ends:
                report.log_point(step, test_metrics if evaluate_now else None)
                if step < end:
                    save()
            elif evaluate_now:
                report.log_point(step, test_metrics)
            else:
                report.refresh(step)
        test = report.last_test
        if test[0] is None:
            # Nothing trained in this call (start == end): still report the test metrics (a collective).
            test = test_metrics()
        result = TrainResult(step, test[0], test[1], report.train_loss, report.clock.total())
        save(result)
        if files is not None:
            files.write_result(result)
        return result
    except TrainingDiverged as e:
        if files is not None:
            files.write_failure(e.record())
        raise
    finally:
        report.close()


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
