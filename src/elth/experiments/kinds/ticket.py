"""Ticket runs: a ticket made from IMP levels (an ETT, a pruning baseline, a control) or trained from
scratch (a DST method), then trained and priced (`jobs.run_ticket_job`)."""
from __future__ import annotations

import math

from elth.experiments.jobs import (
    Context,
    Diverged,
    LevelCost,
    TicketOutcome,
    prepare_ticket_job,
    run_ticket_job,
    ticket_cached,
    ticket_run_dir,
    train_dst_group_job,
    train_ticket_group_job,
)
from elth.experiments.kinds.base import Cannot, RunKind, register
from elth.methods import method


def _cached(ctx: Context, run, basis: LevelCost, like: LevelCost) -> TicketOutcome | Diverged | None:
    return ticket_cached(ctx, run, basis, like)


def _train_together(ctx: Context, members: list[tuple], size: int) -> int:
    """Make the tickets of ticket runs (`members`: each run's job arguments (run, basis, like)) and
    train them in fused groups of `size` (DST runs: train them from scratch); the number of trainings."""
    if method(members[0][0].method).dst is not None:
        return train_dst_group_job(ctx, [(run, like) for run, _, like in members], size)
    items = [(prepare_ticket_job(ctx, run, basis, like), run.seed) for run, basis, like in members]
    return train_ticket_group_job(ctx, members[0][0].target, items, size)


class TicketKind(RunKind):
    name = "ticket"
    noun = "tickets"
    job = staticmethod(run_ticket_job)
    cached_job = staticmethod(_cached)
    trainer = staticmethod(_train_together)

    def inputs(self, graph, node, max_age: float) -> tuple | Cannot | None:
        """(basis, like): the source's IMP level the ticket comes from (the target's own for the
        baselines) and the target's, whose sparsity it matches."""
        run = node.run
        target = graph.level(node.here, run.target, run.seed, run.level, max_age)
        if isinstance(target, Cannot) or target is None:
            return target
        if not run.source:
            return target, target
        source = graph.level(graph.on_dataset(node.here, run.source_dataset), run.source, run.seed, run.level, max_age)
        if isinstance(source, Cannot) or source is None:
            return source
        return source, target

    def directory(self, node) -> str:
        return str(ticket_run_dir(node.here, node.run, *node.args))

    def describe(self, result: TicketOutcome | Diverged) -> str:
        if isinstance(result, Diverged):
            return f"diverged at step {result.step} (kept)"
        acc = "n/a" if result.accuracy is None or math.isnan(result.accuracy) else f"{100 * result.accuracy:.2f}%"
        return f"{acc} at {100 * result.sparsity:.2f}% sparsity ({result.seconds:.0f}s)"

    def needs(self, run) -> str:
        what = [f"IMP level {run.level} of {run.target}"]
        if run.source and run.source != run.target:
            on = f" on {run.source_dataset}" if run.source_dataset else ""
            what.insert(0, f"IMP level {run.level} of {run.source}{on}")
        return f"for {' and '.join(what)} (seed {run.seed})"

    def fusion_key(self, ctx, run) -> tuple:
        """DST runs group only with runs of their own method and length."""
        return (*super().fusion_key(ctx, run), method(run.method).dst)

    def group_noun(self, run) -> str:
        m = method(run.method)
        return f"{m.label} runs" if m.dst is not None else self.noun


TICKET = register(TicketKind())
