"""IMP runs: one network and seed, pruned and retrained level by level (`elth.workflows.imp`)."""
from __future__ import annotations

import math

from elth.experiments.jobs import (
    Context,
    ImpOutcome,
    imp_outcome,
    run_imp_group_job,
    run_imp_job,
)
from elth.experiments.kinds.base import RunKind, register


def _cached(ctx: Context, run) -> ImpOutcome | None:
    return imp_outcome(ctx, run)


def _train_together(ctx: Context, members: list[tuple], size: int) -> int:
    """Advance IMP runs of one network (`members`: (run,) each) level by level in fused groups of `size`."""
    return run_imp_group_job(ctx, [run for (run,) in members], size)


class ImpKind(RunKind):
    name = "imp"
    noun = "IMP runs (level by level)"
    job = staticmethod(run_imp_job)
    cached_job = staticmethod(_cached)
    trainer = staticmethod(_train_together)

    def inputs(self, graph, node, max_age: float) -> tuple:
        return ()

    def directory(self, node) -> str:
        return node.directory  # known from the start (`Graph` sets it)

    def describe(self, result: ImpOutcome) -> str:
        last = result.levels[-1]
        return f"level {last.level} at {100 * last.sparsity:.2f}% sparsity: {100 * last.accuracy:.2f}%"

    def needs(self, run) -> str:
        return "nothing"

    def trainings(self, run) -> int:
        return run.levels + 1  # level 0, the dense network, included

    def trained(self, graph, node) -> int:
        return sum(1 for lv in graph.levels(node, at_least=10**9) if not math.isnan(lv.accuracy))

    def progress(self, graph, node) -> str:
        return f"; {self.trained(graph, node)} of {self.trainings(node.run)} levels trained"

    def network(self, run) -> str:
        return run.model


IMP = register(ImpKind())
