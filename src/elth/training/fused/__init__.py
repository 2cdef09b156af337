"""Horizontal fusion: K runs of one model and protocol trained as one network (see `loop`)."""
from elth.training.fused.loop import Member, evaluate_fused, train_fused
from elth.training.fused.network import FusedLinear, FusedNetwork, FusionError

__all__ = ["FusedLinear", "FusedNetwork", "FusionError", "Member", "evaluate_fused", "train_fused"]
