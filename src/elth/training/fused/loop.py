"""Training K runs of one model and protocol as one fused network, each as if it ran alone.

`train_fused(members, data, protocol, ...)` is `train` for K members at once. Each `Member` has its
own model (starting weights), mask, data seed and output directory; what differs between members
stays per member by construction:

- data: each member's batches come from its own `data.train_epoch(..., seed)` (its own order and
  augmentation); the K batches of a step are stacked, one member per channel group;
- weights, masks, BN statistics, momentum and weight decay: every fused tensor is the members'
  tensors side by side and every op of the network, the loss and SGD is per channel group or
  element-wise (the loss is the sum of the members' own mean losses, so each member's gradient is
  exactly its own);
- the LR schedule is a function of the global step, the same for every member.

Each member's output directory gets what `train` writes there (`run.json`, `metrics.jsonl`,
`checkpoint.pt` every epoch and at the end, `result.json`) in the same format, so a member's run
can be resumed by `train` alone and a fused group resumes from its members' checkpoints. A member
whose run is already finished is left out; members whose checkpoints stopped at different steps
train in separate groups (each group starts at one step).

Not fused: controllers (RigL, DPF) and per-step callbacks; they train with `train` alone.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from elth.errors import ElthError
from elth.training.allocator import tune_malloc
from elth.training.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint, save_checkpoint, tensors_fingerprint
from elth.training.fused.network import FusedNetwork, FusionError, stack_members
from elth.training.fused.optimizer import MemberSGD
from elth.training.loop import (
    PRECISIONS,
    RESULT_FILE,
    RUN_FILE,
    TrainResult,
    _autocast,
    _check_compatible,
    _Clock,
    _run_key,
    _write_json,
    default_device,
    use_channels_last,
)
from elth.training.masking import GradientMask
from elth.training.metrics import METRICS_FILE, MetricsLog
from elth.training.protocol import LRSchedule, Protocol, ProtocolError, parse_steps


@dataclass
class Member:
    """One run of a fused group: `model` holds its starting weights and gets its final ones."""

    model: nn.Module
    data_seed: int = 0
    mask: dict[str, torch.Tensor] | None = None
    out_dir: str | Path | None = None


@dataclass
class _Run:
    """A member's bookkeeping while its group trains."""

    member: Member
    step: int
    seconds_before: float
    key: dict | None = None
    origin: dict | None = None
    optimizer_state: dict | None = None
    log: MetricsLog | None = None
    result: TrainResult | None = None


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
) -> list[TrainResult]:
    """Train every member from global step `start_step` to `end_step` (default: the protocol's
    end); the results in member order, each what `train` alone would return for it."""
    if precision not in PRECISIONS:
        raise ElthError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not members:
        return []
    device = torch.device(device) if device is not None else default_device()
    ipe = data.iterations_per_epoch(protocol.batch_size)
    end = protocol.total_steps(ipe) if end_step is None else int(end_step)
    start_step = int(start_step)
    if start_step < 0 or end < start_step:
        raise ProtocolError(f"cannot train from step {start_step} to step {end}")
    eval_interval = None if eval_every is None else parse_steps(eval_every, ipe)
    if eval_interval == 0:
        raise ProtocolError("eval_every must be a positive number of steps (or None for only at the end)")
    outs = [Path(m.out_dir) for m in members if m.out_dir is not None]
    if len(set(outs)) != len(outs):
        raise FusionError("members of a fused group need different output directories")

    runs = [_prepare(m, data, protocol, start_step, end, precision, ipe) for m in members]
    pending = [r for r in runs if r.result is None]
    for step in sorted({r.step for r in pending}):
        group = [r for r in pending if r.step == step]
        _train_group(group, data, protocol, step, end, ipe, eval_interval, precision, device, progress, desc, eval_batch_size)
    return [r.result for r in runs]


def _prepare(member: Member, data, protocol: Protocol, start_step: int, end: int, precision: str, ipe: int) -> _Run:
    """The member's resume point: its checkpoint if it has one (a finished run gets its result)."""
    run = _Run(member, start_step, 0.0)
    if member.out_dir is None:
        return run
    out = Path(member.out_dir)
    mask = member.mask
    mask_fp = tensors_fingerprint({k: v.bool() for k, v in mask.items()}) if mask is not None else None
    model = member.model
    run.key = _run_key(model, protocol, data, member.data_seed, mask_fp, precision)
    if mask is not None:
        # `train` fingerprints the starting weights after applying the mask.
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, m in mask.items():
                params[name].mul_(m.to(params[name].device, params[name].dtype))
    run.origin = {"start_step": start_step, "weights": tensors_fingerprint(model.state_dict())}
    ckpt = load_checkpoint(out / CHECKPOINT_FILE)
    if ckpt is not None:
        _check_compatible(out, ckpt, run.key, run.origin, model)
        if ckpt["step"] > end:
            raise CheckpointError(f"{out} holds a run already trained to step {ckpt['step']}, past the requested end {end}")
        run.origin = ckpt["origin"]
        model.load_state_dict(ckpt["model"])
        run.optimizer_state = ckpt["optimizer"]
        run.step, run.seconds_before = int(ckpt["step"]), float(ckpt["seconds"])
        if run.step == end and ckpt.get("result") is not None:
            run.result = TrainResult(**ckpt["result"])
            return run
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / RUN_FILE, {**run.key, "origin": run.origin, "end_step": end, "iterations_per_epoch": ipe})
    run.log = MetricsLog(out / METRICS_FILE)
    run.log.truncate_after(run.step)
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


def _stack_batches(iterators: list, device: torch.device):
    xs, ys = [], []
    for it in iterators:
        x, y = next(it)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs).to(device, non_blocking=True), torch.stack(ys).to(device, non_blocking=True)


def _member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's own mean cross-entropy (the op `train` uses, member by member)."""
    return torch.stack([F.cross_entropy(logits[k], y[k]) for k in range(logits.shape[0])])


@torch.no_grad()
def evaluate_fused(net: FusedNetwork, data, batch_size: int, device: torch.device, precision: str) -> list[tuple[float, float]]:
    """Every member's (test accuracy, mean cross-entropy), as `evaluate` gives it for one model."""
    was_training = net.training
    net.eval()
    k = net.k
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    count = 0
    try:
        for x, y in data.test_batches(batch_size):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with _autocast(device, precision):
                logits = net(x.unsqueeze(0).expand(k, *x.shape))
            loss_sum += torch.stack([F.cross_entropy(logits[i].float(), y, reduction="sum") for i in range(k)])
            correct += (logits.argmax(2) == y).sum(1)
            count += y.shape[0]
    finally:
        net.train(was_training)
    if count == 0:
        raise ElthError("the dataset has no test examples to evaluate on")
    return [(int(c) / count, float(s) / count) for c, s in zip(correct.tolist(), loss_sum.tolist())]


def _train_group(
    runs: list[_Run], data, protocol: Protocol, start: int, end: int, ipe: int, eval_interval: int | None,
    precision: str, device: torch.device, progress: bool, desc: str, eval_batch_size: int,
) -> None:
    k = len(runs)
    models = [r.member.model.to(device) for r in runs]
    net = FusedNetwork(models)
    if use_channels_last(models[0], device):
        net.to_channels_last()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu":
        tune_malloc()
    fused_mask = _fused_mask(net, [r.member.mask for r in runs])
    masker = GradientMask(net, fused_mask) if fused_mask is not None else None
    if masker is not None:
        masker.apply_to_weights()
    optimizer = MemberSGD(net, models[0], protocol)
    optimizer.load_member_state_dicts([r.optimizer_state for r in runs])
    schedule = LRSchedule(protocol, ipe)
    seeds = [r.member.data_seed for r in runs]

    step = start
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    count = 0
    clock = _Clock(0.0)
    last_test: list[tuple[float | None, float | None]] = [(None, None)] * k
    train_loss: list[float | None] = [None] * k
    bar = tqdm(
        total=end - start, desc=desc or f"{net.name} x{k} fused", unit="it", disable=not progress,
        file=sys.stderr, dynamic_ncols=True, leave=True,
    )

    def log_point(evaluate_now: bool) -> None:
        nonlocal count
        losses = (loss_sum / count).tolist() if count else [None] * k
        accs = (correct.double() / count).tolist() if count else [None] * k
        rate = clock.window_rate()
        tests = evaluate_fused(net, data, eval_batch_size, device, precision) if evaluate_now else [(None, None)] * k
        for i, r in enumerate(runs):
            if evaluate_now:
                last_test[i] = tests[i]
            if losses[i] is not None:
                train_loss[i] = losses[i]
            if r.log is not None:
                r.log.append({
                    "step": step,
                    "epoch": round(step / ipe, 4),
                    "lr": schedule(step - 1) if step > 0 else schedule(0),
                    "train_loss": losses[i],
                    "train_accuracy": accs[i],
                    "test_loss": tests[i][1],
                    "test_accuracy": tests[i][0],
                    # The member's own rate: its images over the group's wall time.
                    "images_per_second": rate / k if rate else None,
                    "seconds": r.seconds_before + clock.total(),
                })
        loss_sum.zero_()
        correct.zero_()
        count = 0
        clock.new_window()

    def save(results: list[TrainResult] | None) -> None:
        for i, r in enumerate(runs):
            if r.member.out_dir is None:
                continue
            save_checkpoint(
                Path(r.member.out_dir) / CHECKPOINT_FILE,
                {
                    "key": r.key,
                    "origin": r.origin,
                    "step": step,
                    "seconds": r.seconds_before + clock.total(),
                    "model": net.member_state(i),
                    "optimizer": optimizer.member_state_dict(i),
                    "result": results[i].to_dict() if results is not None else None,
                },
            )

    net.train()
    try:
        while step < end:
            epoch, batch_index = divmod(step, ipe)
            stop = min(end, (epoch + 1) * ipe)
            iterators = [
                iter(data.train_epoch(epoch, protocol.batch_size, s, start=batch_index, augment=protocol.augment))
                for s in seeds
            ]
            while step < stop:
                try:
                    x, y = _stack_batches(iterators, device)
                except StopIteration:
                    raise ElthError(f"the dataset ended epoch {epoch} after step {step}, before step {stop}") from None
                optimizer.lr = schedule(step)
                with _autocast(device, precision):
                    logits = net(x)
                    losses = _member_losses(logits, y)
                optimizer.zero_grad()
                losses.sum().backward()
                if masker is not None:
                    masker.apply_to_gradients()
                optimizer.step()
                n = y.shape[1]
                loss_sum.add_(losses.detach(), alpha=n)
                correct.add_((logits.detach().argmax(2) == y).sum(1))
                count += n
                clock.images += y.numel()
                step += 1
                bar.update(1)
                if step < stop and eval_interval is not None and step % eval_interval == 0:
                    log_point(evaluate_now=True)
            evaluate_now = step == end or (eval_interval is not None and step % eval_interval == 0)
            log_point(evaluate_now)
            if step < end:
                save(None)
        for i in range(k):
            if last_test[i][0] is None:
                last_test = evaluate_fused(net, data, eval_batch_size, device, precision)
                break
        results = [
            TrainResult(step, last_test[i][0], last_test[i][1], train_loss[i], runs[i].seconds_before + clock.total())
            for i in range(k)
        ]
        save(results)
        for i, r in enumerate(runs):
            r.result = results[i]
            r.member.model.load_state_dict(net.member_state(i))
            if r.member.out_dir is not None:
                _write_json(Path(r.member.out_dir) / RESULT_FILE, results[i].to_dict())
    finally:
        bar.close()
