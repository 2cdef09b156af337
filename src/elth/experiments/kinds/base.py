"""What every kind of run in an experiment's graph is: the scheduler (`dag.py`), `--status`
(`status.py`) and fused groups ask a run's kind, never switch on it.

A kind owns its runs' inputs (what must exist in the store first), identity (the run directory),
execution (the job a worker runs, and how a finished run is read back), fused groups (which runs
train together, and how) and status text. A new kind of run is a subclass in a file of its own,
registered in `kinds/__init__.py`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

#: Node states. Final: done, diverged (a ticket run kept as diverged), failed, skipped.
WAITING, SUBMITTED, ELSEWHERE = "waiting", "submitted", "elsewhere"
DONE, DIVERGED, FAILED, SKIPPED = "done", "diverged", "failed", "skipped"
FINAL = (DONE, DIVERGED, FAILED, SKIPPED)


@dataclass(frozen=True)
class Cannot:
    """Why a run will not run: a failure of the experiment, or (`failed` False) a consequence of a
    ticket kept as diverged."""

    reason: str
    failed: bool = True


class RunKind(ABC):
    """One kind of run. Subclasses set `name`, `noun`, `job`, `cached_job` and `trainer` and
    implement the abstract methods (`inputs`, `directory`, `describe`, `needs`); the rest has defaults."""

    #: how status lines and records name the kind
    name: str = ""
    #: what a fused group of these runs is called ("tickets")
    noun: str = ""
    #: `job(ctx, run, *inputs)`: the run's work, as a worker runs it (a top-level function: pickled)
    job: Callable
    #: `cached_job(ctx, run, *inputs)`: the run's result when the store holds it, else None (top-level)
    cached_job: Callable
    #: `trainer(ctx, [job arguments of each member], size)`: train the members' trainings in fused
    #: groups of `size`, where their jobs look for them; the number of trainings (top-level)
    trainer: Callable

    def __reduce__(self):  # a kind travels with a task as a reference to its registered instance
        return (_registered, (self.name,))

    def __repr__(self) -> str:
        return f"<run kind {self.name}>"

    # -- inputs and identity -------------------------------------------------------------------------
    @abstractmethod
    def inputs(self, graph, node, max_age: float) -> tuple | Cannot | None:
        """The job's arguments after (ctx, run) once what the run needs exists; None while waiting;
        `Cannot` when it never will."""

    @abstractmethod
    def directory(self, node) -> str:
        """The run's directory in the store (its inputs known)."""

    def cached(self, node):
        """The run's result in the store (None: not finished)."""
        return self.cached_job(node.here, node.run, *node.args)

    # -- status text ---------------------------------------------------------------------------------
    @abstractmethod
    def describe(self, result) -> str:
        """A finished run's result in a few words."""

    @abstractmethod
    def needs(self, run) -> str:
        """What a waiting run waits for ("for IMP level 2 of ...")."""

    def trainings(self, run) -> int:
        """How many trainings the run is."""
        return 1

    def trained(self, graph, node) -> int:
        """Trainings of an unfinished run already done."""
        return 0

    def progress(self, graph, node) -> str:
        """What an unfinished run has done so far, for its status line ("" if nothing to say)."""
        return ""

    # -- fused groups --------------------------------------------------------------------------------
    def network(self, run) -> str:
        """The network the run trains."""
        return run.target

    def fusion_key(self, ctx, run) -> tuple:
        """Runs with equal keys may train together: same kind, context (dataset, protocol, device)
        and network."""
        return self.name, ctx, self.network(run)

    def group_noun(self, run) -> str:
        return self.noun

    def members_per_group(self, size: int) -> int:
        """Runs per group task for a fused group of `size` trainings."""
        return size

    def worth_fusing(self, members: int, size: int) -> bool:
        """A group trains more than one network at once."""
        return size > 1 and members > 1


REGISTRY: dict[str, RunKind] = {}


def register(kind: RunKind) -> RunKind:
    if kind.name in REGISTRY:
        raise ValueError(f"a run kind named {kind.name!r} is registered already")
    REGISTRY[kind.name] = kind
    return kind


def _registered(name: str) -> RunKind:
    """The kind registered as `name` (unpickling a kind imports this package, which registers them)."""
    return REGISTRY[name]
