"""LMC runs: two copies of a ticket trained with different data orders, and the error along the
line between them (`elth.analysis.lmc`)."""
from __future__ import annotations

from elth.experiments.jobs import (
    LMC_SEED_OFFSET,
    Context,
    lmc_cached,
    lmc_run_dir,
    run_lmc_job,
    train_ticket_group_job,
)
from elth.experiments.kinds.base import (
    DIVERGED,
    DONE,
    FAILED,
    SKIPPED,
    Cannot,
    RunKind,
    register,
)
from elth.methods import curve_label


def _cached(ctx: Context, run, ticket_path: str, label: str) -> dict | None:
    return lmc_cached(ctx, run, ticket_path)


def _train_together(ctx: Context, members: list[tuple], size: int) -> int:
    """Train both copies of every LMC run (`members`: (run, ticket path, label)) in fused groups of `size`."""
    items = [(path, seed) for run, path, _ in members for seed in (run.seed, run.seed + LMC_SEED_OFFSET)]
    return train_ticket_group_job(ctx, members[0][0].target, items, size)


class LMCKind(RunKind):
    name = "lmc"
    noun = "LMC runs (both copies)"
    job = staticmethod(run_lmc_job)
    cached_job = staticmethod(_cached)
    trainer = staticmethod(_train_together)

    def inputs(self, graph, node, max_age: float) -> tuple | Cannot | None:
        """(ticket path, curve label): an IMP level's ticket, or a ticket run's once trained."""
        run = node.run
        if run.ticket is None:
            level = graph.level(node.here, run.target, run.seed, run.level, max_age)
            if isinstance(level, Cannot):
                return Cannot(f"skipped: IMP on {run.target} (seed {run.seed}) did not reach level {run.level}")
            return None if level is None else (level.ticket, "IMP")
        source = graph.ticket_nodes.get((node.dataset, run.ticket))
        if source is not None and source.state == DIVERGED:
            return Cannot("skipped: its ticket's training diverged (kept as diverged)", failed=False)
        if source is None or source.state in (FAILED, SKIPPED):
            return Cannot(f"skipped: the ticket run {run.ticket.label} failed or diverged")
        if source.state != DONE:
            return None
        t = run.ticket
        return source.result.ticket, curve_label((t.method, t.source, t.strategy))

    def directory(self, node) -> str:
        return str(lmc_run_dir(node.here, node.run, node.args[0]))

    def describe(self, result: dict) -> str:
        return f"instability {100 * result.get('instability', float('nan')):.2f}%"

    def needs(self, run) -> str:
        if run.ticket is None:
            return f"for IMP level {run.level} of {run.target} (seed {run.seed})"
        return f"for the ticket run {run.ticket.label}"

    def trainings(self, run) -> int:
        return 2  # its two copies

    def members_per_group(self, size: int) -> int:
        return max(1, size // 2)  # each run trains two copies

    def worth_fusing(self, members: int, size: int) -> bool:
        return size > 1  # one LMC run alone still fuses its two copies


LMC = register(LMCKind())
