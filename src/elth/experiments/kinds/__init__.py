"""The kinds of run an experiment's graph holds, each an object that owns its inputs, identity,
execution, fused groups and status text (`base.RunKind`); one file each."""
from elth.experiments.kinds.base import (
    DIVERGED,
    DONE,
    ELSEWHERE,
    FAILED,
    FINAL,
    REGISTRY,
    SKIPPED,
    SUBMITTED,
    WAITING,
    Cannot,
    RunKind,
)
from elth.experiments.kinds.imp import IMP
from elth.experiments.kinds.lmc import LMC
from elth.experiments.kinds.ticket import TICKET

__all__ = ["DIVERGED", "DONE", "ELSEWHERE", "FAILED", "FINAL", "IMP", "LMC", "REGISTRY", "SKIPPED", "SUBMITTED",
           "TICKET", "WAITING", "Cannot", "RunKind"]
