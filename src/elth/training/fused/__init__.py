"""Horizontal fusion: K runs of one model and protocol trained as one network (see `engine`); the
loop that trains them is every run's, `elth.training.loop.train_group`."""
from elth.training.fused.engine import evaluate_fused
from elth.training.fused.network import FusedLinear, FusedNetwork, FusionError
from elth.training.fused.sizing import default_group_size

__all__ = ["FusedLinear", "FusedNetwork", "FusionError", "default_group_size", "evaluate_fused"]
