"""A run as a member of a training group (a lone run is a group of one)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from elth.training.step import TrainingController


@dataclass
class Member:
    """One run of a group: `model` holds its starting weights and gets its final ones."""

    model: nn.Module
    data_seed: int = 0
    mask: dict[str, torch.Tensor] | None = None
    out_dir: str | Path | None = None
    #: A `TrainingController` not yet attached (a fused group needs controllers whose class has `fuse`).
    controller: TrainingController | None = None
