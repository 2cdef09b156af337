"""The rewind point: a freshly initialised network trained dense for the first few steps.

IMP and every pruning method start from the same rewind weights when their settings agree, so the
dense training to the rewind point runs once per (model, dataset, protocol, rewind step, seeds) and
is kept under `root/rewind-<hash>/`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file

from elth.errors import ElthError
from elth.files import REWIND_WEIGHTS_FILE, TRAIN_DIR, atomic_path
from elth.models import ElasticModel, build_model
from elth.runs import RunKey
from elth.training import Protocol, parse_steps, train


class RewindError(ElthError, ValueError):
    """A rewind point that the protocol cannot reach."""


def rewind_step_of(rewind: str, data, protocol: Protocol) -> int:
    """The global step of rewind point `rewind` ('1000it', '5ep', '0') under `protocol` on `data`."""
    ipe = data.iterations_per_epoch(protocol.batch_size)
    step = parse_steps(rewind, ipe)
    total = protocol.total_steps(ipe)
    if step >= total:
        raise RewindError(
            f"rewind point {rewind} (step {step}) is not before the end of training ({protocol.length}, {total} steps)"
        )
    return step


@dataclass(frozen=True)
class RewindKey(RunKey):
    """What determines the rewind weights (`root/rewind-<hash>`)."""

    prefix: ClassVar[str] = "rewind"
    model: str
    dataset: dict
    protocol: dict
    rewind_step: int
    seed: int
    data_seed: int
    precision: str


def rewind_point(
    model_name: str,
    data,
    protocol: Protocol,
    rewind: str,
    *,
    seed: int,
    data_seed: int,
    root: str | os.PathLike,
    device: torch.device | str | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> tuple[ElasticModel, int]:
    """The model initialised with `seed` and trained dense to `rewind`, and the rewind step.

    Rewind 0 means no training (the initial weights). Otherwise the training is resumable and its
    result is cached in `root/rewind-<hash>/rewind.safetensors`.
    """
    step = rewind_step_of(rewind, data, protocol)
    info = data.info
    model = build_model(model_name, info.input_shape, info.num_classes, seed=seed)
    if device is not None:
        model.to(device)
    if step == 0:
        return model, 0
    out = RewindKey(model_name, data.info.to_dict(), protocol.to_dict(), step, seed, data_seed, precision).directory(root)
    weights = Path(out) / REWIND_WEIGHTS_FILE
    if weights.is_file():
        model.load_state_dict(load_file(str(weights)))
        return model, step
    train(
        model, data, protocol, data_seed=data_seed, start_step=0, end_step=step,
        out_dir=Path(out) / TRAIN_DIR, eval_every=None, precision=precision, device=device, progress=progress,
        desc=f"{model_name}: dense to rewind point {rewind}",
    )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    return model, step
