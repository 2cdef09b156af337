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
schedule uses): `c.before_forward(t)`; forward and backward; `c.after_backward(t)` with the dense
gradients still in `.grad` (it returns False to skip this step's optimiser update, as RigL does
on its mask-update steps); the optimiser step; `c.after_step(t)`. `c.state_dict()` is saved in
every checkpoint and handed back through `c.load_state_dict()` on resume, and `c.hparams()` joins
the checkpoint's key, so a checkpoint of other controller settings is refused. A controller owns
the sparsity, so it cannot be combined with a fixed `mask`. Without a controller the loop does
exactly what it did before (no extra work per step).
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, runtime_checkable
from typing import Protocol as TypingProtocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from elth.errors import ElthError
from elth.files import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    RESULT_FILE,
    RUN_FILE,
    tensors_hash,
    write_json_atomic,
)
from elth.training import distributed
from elth.training.allocator import tune_malloc
from elth.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from elth.training.masking import GradientMask
from elth.training.metrics import MetricsLog, RunningStats
from elth.training.protocol import LRSchedule, Protocol, ProtocolError, parse_steps

PRECISIONS = ("fp32", "bf16")
#: Steps between progress-bar refreshes of loss/accuracy (each one reads the device sums).
DISPLAY_EVERY = 50


@dataclass
class TrainResult:
    step: int
    test_accuracy: float | None
    test_loss: float | None
    train_loss: float | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class TrainingController(TypingProtocol):
    """What `train(..., controller=)` calls (see the module docstring for when)."""

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...

    def before_forward(self, step: int) -> None: ...

    def after_backward(self, step: int) -> bool: ...

    def after_step(self, step: int) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def hparams(self) -> dict: ...


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_conv_model(model: nn.Module) -> bool:
    flag = getattr(model, "is_conv", None)
    if flag is not None:
        return bool(flag)
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


#: On CPU, channels_last convolutions with fewer than 8 output channels corrupt memory in
#: torch 2.13's oneDNN path (seen on x86-64: heap corruption in training of width-2..7 ResNets),
#: so such narrow conv nets keep the default memory format there.
MIN_CPU_CHANNELS_LAST = 8


def use_channels_last(model: nn.Module, device: torch.device) -> bool:
    """channels_last for conv nets, except narrow ones on CPU (see MIN_CPU_CHANNELS_LAST)."""
    if not is_conv_model(model):
        return False
    if device.type != "cpu":
        return True
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return all(m.out_channels >= MIN_CPU_CHANNELS_LAST for m in convs)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: nn.Module, data, batch_size: int = 1000, device=None, precision: str = "fp32"
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy loss) on the test set, in eval mode (BN running statistics).

    With several ranks the test batches are shared out round-robin (each rank loads only its own)
    and the sums all-reduced (every rank calls this, with the same weights), so each rank gets the
    metrics of the whole test set.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    channels_last = use_channels_last(model, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    try:
        for x, y in data.test_batches(batch_size, **distributed.data_part_kwargs()):
            x = _prepare_input(x, device, channels_last)
            y = y.to(device, non_blocking=True)
            with _autocast(device, precision):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            count += y.shape[0]
    finally:
        model.train(was_training)
    loss_total, correct_total, count = distributed.all_reduce_numbers(
        [float(loss_sum), float(correct), count], device
    )
    if count == 0:
        raise ElthError("the dataset has no test examples to evaluate on")
    return int(correct_total) / count, loss_total / count


def _prepare_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


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


def _run_key(model: nn.Module, protocol: Protocol, data, data_seed: int, mask_fp: str | None, precision: str) -> dict:
    """What must agree for a checkpoint to be resumed (the starting point is checked separately)."""
    info = getattr(data, "info", None)
    return {
        "model": getattr(model, "name", type(model).__name__),
        "dataset": info.to_dict() if info is not None else None,
        "protocol": protocol.to_dict(),
        "data_seed": int(data_seed),
        "mask": mask_fp,
        "precision": precision,
    }


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
        raise ProtocolError("eval_every must be a positive number of steps (or None for only at the end)")
    if controller is not None and mask is not None:
        raise ElthError("give either a fixed mask or a controller that manages the sparsity, not both")
    _check_split(data, protocol.batch_size)

    channels_last = use_channels_last(model, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu":
        tune_malloc()
    masker = GradientMask(model, mask) if mask is not None else None
    if masker is not None:
        masker.apply_to_weights()
    optimizer = make_optimizer(model, protocol)
    if controller is not None:
        controller.attach(model, optimizer)
    schedule = LRSchedule(protocol, ipe)

    step, seconds_before = start_step, 0.0
    log: MetricsLog | None = None
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        mask_fp = tensors_hash({k: v.bool() for k, v in mask.items()}, "checkpoint") if mask is not None else None
        key = _run_key(model, protocol, data, data_seed, mask_fp, precision)
        if controller is not None:
            key["controller"] = controller.hparams()
        origin = {"start_step": start_step, "weights": tensors_hash(model.state_dict(), "checkpoint")}
        ckpt = load_checkpoint(out / CHECKPOINT_FILE)
        if ckpt is not None:
            _check_compatible(out, ckpt, key, origin, model)
            if ckpt["step"] > end:
                raise CheckpointError(
                    f"{out} holds a run already trained to step {ckpt['step']}, past the requested end {end}"
                )
            origin = ckpt["origin"]
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if controller is not None:
                controller.load_state_dict(ckpt["controller"])
            step, seconds_before = int(ckpt["step"]), float(ckpt["seconds"])
            if step == end and ckpt.get("result") is not None:
                return TrainResult(**ckpt["result"])
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / RUN_FILE, {**key, "origin": origin, "end_step": end, "iterations_per_epoch": ipe})
        log = MetricsLog(out / METRICS_FILE)
        log.truncate_after(step)
    # Every rank now holds the same weights; DDP wraps the model after a resume (it broadcasts rank 0's).
    net = distributed.data_parallel(model, device)

    stats = RunningStats(device)
    bar = tqdm(
        total=end - start_step, initial=step - start_step, desc=desc or getattr(model, "name", "train"),
        unit="it", disable=not progress or not distributed.is_main(), file=sys.stderr, dynamic_ncols=True, leave=True,
    )
    clock = _Clock(seconds_before)
    last_test: tuple[float | None, float | None] = (None, None)
    train_loss: float | None = None

    def log_point(evaluate_now: bool) -> None:
        nonlocal last_test, train_loss
        loss, acc = stats.read_global()
        images_per_s = clock.window_rate()
        test = (None, None)
        distributed.broadcast_module_buffers(model)  # per-rank BN statistics: rank 0's, as saved
        if evaluate_now:
            test = evaluate(model, data, eval_batch_size, device, precision)
            last_test = test
        if loss is not None:
            train_loss = loss
        row = {
            "step": step,
            "epoch": round(step / ipe, 4),
            "lr": schedule(step - 1) if step > 0 else schedule(0),
            "train_loss": loss,
            "train_accuracy": acc,
            "test_loss": test[1],
            "test_accuracy": test[0],
            "images_per_second": images_per_s,
            "seconds": clock.total(),
        }
        if log is not None:
            log.append(row)
        _show(bar, loss, acc, images_per_s, last_test[0])
        stats.reset()
        clock.new_window()

    def save(result: TrainResult | None) -> None:
        if out is None:
            return
        distributed.check_identical(dict(model.named_parameters()), f"the weights at step {step}")
        save_checkpoint(
            out / CHECKPOINT_FILE,
            {
                "key": key,
                "origin": origin,
                "step": step,
                "seconds": clock.total(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "result": result.to_dict() if result is not None else None,
                **({"controller": controller.state_dict()} if controller is not None else {}),
            },
        )

    model.train()
    try:
        while step < end:
            epoch, batch_index = divmod(step, ipe)
            stop = min(end, (epoch + 1) * ipe)
            # Each rank loads its share of every global batch (data order and augmentation as on one process).
            batches = data.train_epoch(epoch, protocol.batch_size, data_seed, start=batch_index,
                                       augment=protocol.augment, **distributed.data_part_kwargs())
            for x, y in batches:
                lr = schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = _prepare_input(x, device, channels_last)
                y = y.to(device, non_blocking=True)
                if controller is not None:
                    controller.before_forward(step)
                global_n = min(protocol.batch_size, data.num_train - (step % ipe) * protocol.batch_size)
                with _autocast(device, precision):
                    logits = net(x)
                    loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scale = distributed.loss_scale(y.shape[0], global_n)
                (loss if scale == 1.0 else loss * scale).backward()
                if masker is not None:
                    masker.apply_to_gradients()
                if controller is None:
                    optimizer.step()
                else:
                    if controller.after_backward(step):
                        optimizer.step()
                    controller.after_step(step)
                stats.add(loss, logits, y)
                clock.images += global_n
                step += 1
                bar.update(1)
                if callback is not None:
                    callback(step, model)
                if step >= stop:
                    break
                if eval_interval is not None and step % eval_interval == 0:
                    log_point(evaluate_now=True)
                elif not bar.disable and (step - start_step) % DISPLAY_EVERY == 0:
                    _show(bar, *stats.read(), clock.window_rate(), last_test[0])
            if step < stop:
                raise ElthError(f"the dataset ended epoch {epoch} after step {step}, before step {stop}")
            evaluate_now = step == end or (eval_interval is not None and step % eval_interval == 0)
            log_point(evaluate_now)
            if step < end:
                save(None)
        if last_test[0] is None:
            # Nothing trained in this call (start == end): still report the test metrics.
            distributed.broadcast_module_buffers(model)
            last_test = evaluate(model, data, eval_batch_size, device, precision)
        result = TrainResult(step, last_test[0], last_test[1], train_loss, clock.total())
        save(result)
        if out is not None:
            write_json_atomic(out / RESULT_FILE, result.to_dict())
        return result
    finally:
        bar.close()


def _check_split(data, batch_size: int) -> None:
    """Every rank needs at least one example of every batch (the last one of an epoch included)."""
    ranks = distributed.world_size()
    if ranks == 1:
        return
    smallest = min(batch_size, data.num_train - (data.iterations_per_epoch(batch_size) - 1) * batch_size)
    if smallest < ranks:
        raise distributed.DistributedError(
            f"a batch of {smallest} examples (batch size {batch_size}, {data.num_train} training examples) "
            f"cannot be split over {ranks} ranks"
        )


def _check_compatible(out: Path, ckpt: dict, key: dict, origin: dict, model: nn.Module) -> None:
    if ckpt.get("key") != key:
        theirs, ours = ckpt.get("key") or {}, key
        differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise CheckpointError(
            f"{out} holds a run with different settings ({', '.join(differ)}); "
            "choose another output directory or remove it to start over"
        )
    if ckpt.get("origin") == origin:
        return
    # Continuing from the checkpoint's own weights (e.g. train 0 -> k, then k -> end) is fine too.
    if origin["start_step"] == ckpt["step"] and origin["weights"] == tensors_hash(ckpt["model"], "checkpoint"):
        return
    raise CheckpointError(
        f"{out} holds a run that started from other weights or another step; "
        "choose another output directory or remove it to start over"
    )


class _Clock:
    """Wall time of the run (carried over resumes) and images/s since the last log point."""

    def __init__(self, seconds_before: float):
        self.seconds_before = seconds_before
        self.start = time.perf_counter()
        self.window_start = self.start
        self.images = 0

    def total(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start

    def window_rate(self) -> float | None:
        elapsed = time.perf_counter() - self.window_start
        return self.images / elapsed if self.images and elapsed > 0 else None

    def new_window(self) -> None:
        self.window_start = time.perf_counter()
        self.images = 0


def _show(bar: tqdm, loss, acc, images_per_s, test_acc) -> None:
    if bar.disable:
        return
    post = {}
    if loss is not None:
        post["loss"] = f"{loss:.3f}"
        post["acc"] = f"{acc:.3f}"
    if images_per_s:
        post["img/s"] = f"{images_per_s:.0f}"
    if test_acc is not None:
        post["test"] = f"{test_acc:.3f}"
    bar.set_postfix(post, refresh=False)
