"""Fused groups in an experiment's graph: ready runs of one kind, network, dataset and protocol are
trained K at a time as one fused network (`elth.training.train_group`): IMP runs of different seeds
(level by level), ticket runs (those of one rewind step together), both copies of LMC runs.

The scheduler (`dag.py`) hands a worker a `GroupTask` of up to K such runs that are ready and that
nobody holds; the worker takes their leases, trains them as one group (the run kind's `trainer`,
writing each training where the run's own job looks for it), then runs each member's own job,
which finds its training done. So results, attempts and status records stay per run, and a group
that fails leaves its members to train one by one. Which runs group together, and how many, is
the run kind's to say (`kinds.base.RunKind.fusion_key`, `members_per_group`); K comes from here.
"""
from __future__ import annotations

from elth.experiments.jobs import Context, settings
from elth.models import build_model
from elth.training import default_device
from elth.training.fused import default_group_size


def group_size(ctx: Context, lookup: Context, target: str, fuse: int | None) -> int:
    """Trainings per group: `fuse`, else the default for the run's device and network."""
    if fuse is not None:
        return fuse
    s = settings(lookup, target)
    info = s.info
    model = build_model(target, info.input_shape, info.num_classes, seed=0)
    device = ctx.device if ctx.device is not None else default_device()
    return default_group_size(model, info.input_shape, s.protocol.batch_size, device)
