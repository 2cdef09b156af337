"""Fused groups in an experiment's graph: ready runs of one network, dataset and protocol are
trained K at a time as one fused network (`elth.training.fused`): IMP runs of different seeds
(level by level), ticket runs (those of one rewind step together), both copies of LMC runs.

The scheduler (`dag.py`) hands a worker a `GroupTask` of up to K such runs that are ready and that
nobody holds; the worker takes their leases, trains them as one group (writing each training where
the run's own job looks for it), then runs each member's own job, which finds its training done.
So results, attempts and status records stay per run, and a group that fails leaves its members
to train one by one. DST ticket runs (RigL, DPF) group with runs of the same method and length on
the same network (each at its own sparsity).
"""
from __future__ import annotations

from elth.experiments.jobs import (
    LMC_SEED_OFFSET,
    Context,
    prepare_ticket_job,
    run_imp_group_job,
    settings,
    train_dst_group_job,
    train_ticket_group_job,
)
from elth.experiments.spec import ImpRun
from elth.methods import method
from elth.models import build_model
from elth.training import default_device
from elth.training.fused import default_group_size


def network(run) -> str:
    """The network a run trains."""
    return run.model if isinstance(run, ImpRun) else run.target


def fusion_key(kind: str, ctx: Context, run) -> tuple:
    """Runs with equal keys may train together: same kind, context (dataset, protocol, device) and
    network; ticket runs also the same DST method and length (None for the others)."""
    return kind, ctx, network(run), method(run.method).dst if kind == "ticket" else None


def group_size(ctx: Context, lookup: Context, target: str, fuse: int | None) -> int:
    """Members per group: `fuse`, else the default for the run's device and network."""
    if fuse is not None:
        return fuse
    s = settings(lookup, target)
    info = s.info
    model = build_model(target, info.input_shape, info.num_classes, seed=0)
    device = ctx.device if ctx.device is not None else default_device()
    return default_group_size(model, info.input_shape, s.protocol.batch_size, device)


# -- what a worker runs (top-level functions: they are pickled) ---------------------------------
def train_imp_runs(ctx: Context, members: list[tuple], size: int) -> int:
    """Advance IMP runs of one network (`members`: (run,) each) level by level in fused groups of `size`."""
    return run_imp_group_job(ctx, [run for (run,) in members], size)


def train_ticket_runs(ctx: Context, members: list[tuple], size: int) -> int:
    """Make the tickets of ticket runs (`members`: each run's job arguments (run, basis, like)) and
    train them in fused groups of `size` (DST runs: train them from scratch); the number of trainings."""
    if method(members[0][0].method).dst is not None:
        return train_dst_group_job(ctx, [(run, like) for run, _, like in members], size)
    items = [(prepare_ticket_job(ctx, run, basis, like), run.seed) for run, basis, like in members]
    return train_ticket_group_job(ctx, members[0][0].target, items, size)


def train_lmc_copies(ctx: Context, members: list[tuple], size: int) -> int:
    """Train both copies of every LMC run (`members`: (run, ticket path, label)) in fused groups of `size`."""
    items = [(path, seed) for run, path, _ in members for seed in (run.seed, run.seed + LMC_SEED_OFFSET)]
    return train_ticket_group_job(ctx, members[0][0].target, items, size)


def members_per_group(kind: str, size: int) -> int:
    """Runs per group task for a fused group of `size` trainings (an LMC run trains two copies)."""
    return max(1, size // 2) if kind == "lmc" else size


def worth_fusing(kind: str, members: int, size: int) -> bool:
    """A group trains more than one network at once (one LMC run alone still fuses its two copies)."""
    return size > 1 and (members > 1 or kind == "lmc")


TRAINERS = {"imp": train_imp_runs, "ticket": train_ticket_runs, "lmc": train_lmc_copies}
