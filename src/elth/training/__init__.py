"""Training: protocols (the paper's Table 4 as presets), the resumable loop, checkpoints, metrics."""
from elth.training.checkpoint import CheckpointError
from elth.training.device import PRECISIONS, default_device
from elth.training.loop import Member, evaluate, train, train_group
from elth.training.masking import MaskError
from elth.training.protocol import (
    PRESETS,
    Protocol,
    ProtocolError,
    default_rewind,
    parse_steps,
    preset,
)
from elth.training.resume import TrainResult
from elth.training.step import TrainingController, TrainingDiverged

__all__ = [
    "CheckpointError",
    "MaskError",
    "Member",
    "PRECISIONS",
    "PRESETS",
    "Protocol",
    "ProtocolError",
    "TrainResult",
    "TrainingController",
    "TrainingDiverged",
    "default_device",
    "default_rewind",
    "evaluate",
    "parse_steps",
    "preset",
    "train",
    "train_group",
]
