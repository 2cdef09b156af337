"""Horizontal fusion: K runs of one model and protocol trained as one network (see `loop`)."""
from elth.training.fused.loop import Member, evaluate_fused, train_fused
from elth.training.fused.network import FusedLinear, FusedNetwork, FusionError
from elth.training.fused.sizing import default_group_size

__all__ = ["FusedLinear", "FusedNetwork", "FusionError", "Member", "default_group_size", "evaluate_fused", "train_fused"]
