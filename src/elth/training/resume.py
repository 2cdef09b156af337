"""The files of one training run: what must agree to resume it, the checkpoint, run.json, result.json.

A run is identified by its key (model, dataset, protocol, data seed, mask, precision, controller
settings) and its origin (start step and a hash of the starting weights). A checkpoint is resumed
only by a run with the same key that started from the same point, or that starts from the
checkpoint's own weights at the checkpoint's step (train 0 -> k, then k -> end).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from elth.files import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    RESULT_FILE,
    RUN_FILE,
    tensors_hash,
    write_json_atomic,
)
from elth.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from elth.training.metrics import MetricsLog
from elth.training.protocol import Protocol
from elth.training.step import TrainingController


@dataclass
class TrainResult:
    step: int
    test_accuracy: float | None
    test_loss: float | None
    train_loss: float | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Resumed:
    """Where a resumed run stands: its step, wall seconds so far and, if it had finished, its result."""

    step: int
    seconds: float
    result: TrainResult | None


def run_key(
    model: nn.Module,
    protocol: Protocol,
    data,
    data_seed: int,
    mask: dict[str, torch.Tensor] | None,
    precision: str,
    controller: TrainingController | None,
) -> dict:
    """What must agree for a checkpoint to be resumed (the starting point is checked separately)."""
    info = getattr(data, "info", None)
    key = {
        "model": getattr(model, "name", type(model).__name__),
        "dataset": info.to_dict() if info is not None else None,
        "protocol": protocol.to_dict(),
        "data_seed": int(data_seed),
        "mask": tensors_hash({k: v.bool() for k, v in mask.items()}, "checkpoint") if mask is not None else None,
        "precision": precision,
    }
    if controller is not None:
        key["controller"] = controller.hparams()
    return key


class RunFiles:
    """A training run's directory `out`, for a run with `key` starting from `model`'s weights at `start_step`."""

    def __init__(self, out: str | Path, key: dict, model: nn.Module, start_step: int):
        self.out = Path(out)
        self.key = key
        self.origin = {"start_step": start_step, "weights": tensors_hash(model.state_dict(), "checkpoint")}

    def resume(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, controller: TrainingController | None, end: int,
    ) -> Resumed | None:
        """Load the checkpoint into model, optimizer and controller; None if there is none."""
        ckpt = load_checkpoint(self.out / CHECKPOINT_FILE)
        if ckpt is None:
            return None
        self._check_compatible(ckpt)
        if ckpt["step"] > end:
            raise CheckpointError(
                f"{self.out} holds a run already trained to step {ckpt['step']}, past the requested end {end}"
            )
        self.origin = ckpt["origin"]
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if controller is not None:
            controller.load_state_dict(ckpt["controller"])
        step = int(ckpt["step"])
        finished = step == end and ckpt.get("result") is not None
        return Resumed(step, float(ckpt["seconds"]), TrainResult(**ckpt["result"]) if finished else None)

    def start(self, step: int, end: int, iterations_per_epoch: int) -> MetricsLog:
        """Record the run (run.json) and open its metrics log, cut back to `step`."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.out / RUN_FILE,
            {**self.key, "origin": self.origin, "end_step": end, "iterations_per_epoch": iterations_per_epoch},
        )
        log = MetricsLog(self.out / METRICS_FILE)
        log.truncate_after(step)
        return log

    def save(
        self,
        step: int,
        seconds: float,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        controller: TrainingController | None,
        result: TrainResult | None = None,
    ) -> None:
        save_checkpoint(
            self.out / CHECKPOINT_FILE,
            {
                "key": self.key,
                "origin": self.origin,
                "step": step,
                "seconds": seconds,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "result": result.to_dict() if result is not None else None,
                **({"controller": controller.state_dict()} if controller is not None else {}),
            },
        )

    def write_result(self, result: TrainResult) -> None:
        write_json_atomic(self.out / RESULT_FILE, {"status": "finished", **result.to_dict()})

    def write_failure(self, record: dict) -> None:
        """result.json of a run that could not finish (`record["status"]` is "failed")."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out / RESULT_FILE, record)

    def _check_compatible(self, ckpt: dict) -> None:
        if ckpt.get("key") != self.key:
            theirs, ours = ckpt.get("key") or {}, self.key
            differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise CheckpointError(
                f"{self.out} holds a run with different settings ({', '.join(differ)}); "
                "choose another output directory or remove it to start over"
            )
        if ckpt.get("origin") == self.origin:
            return
        # Continuing from the checkpoint's own weights (e.g. train 0 -> k, then k -> end) is fine too.
        if self.origin["start_step"] == ckpt["step"] and self.origin["weights"] == tensors_hash(ckpt["model"], "checkpoint"):
            return
        raise CheckpointError(
            f"{self.out} holds a run that started from other weights or another step; "
            "choose another output directory or remove it to start over"
        )
