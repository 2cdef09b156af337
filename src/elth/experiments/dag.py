"""An experiment's runs as a graph: each run starts as soon as what it needs is in the store.

A ticket run at IMP level k needs level k's ticket of its source's IMP run and of its target's
(the ticket it transforms or prunes, and the one whose sparsity it matches): it starts as soon as
both exist, even while those IMP runs go on to deeper levels, and a slow IMP run holds back only
the runs that need it. An LMC run needs its ticket: an IMP level's, or a ticket run's once trained.

The scheduler reads the store for everything: which runs are finished (their result files), which
levels exist, and who holds a run (its lease). Runs held by another worker (another `elth
experiment` process, a job of another runner) are left to it and looked at again every `poll`
seconds: when they finish their results are read back, when their worker dies (its lease goes
stale) they are run here. So any number of runners can work on one store.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

from elth.experiments import fusion
from elth.experiments.attempts import first_line
from elth.experiments.jobs import (
    Context,
    Diverged,
    LevelCost,
    dataset_name,
    imp_directory,
    imp_levels,
    on_cpu,
    on_dataset,
)
from elth.experiments.kinds import (
    DIVERGED,
    DONE,
    ELSEWHERE,
    FAILED,
    FINAL,
    IMP,
    LMC,
    SKIPPED,
    SUBMITTED,
    TICKET,
    WAITING,
    Cannot,
    RunKind,
)
from elth.experiments.lease import holder
from elth.experiments.leased import (
    Busy,
    Failed,
    Finished,
    GroupOutcome,
    GroupTask,
    Task,
    WorkerSettings,
)
from elth.experiments.spec import ImpRun, LMCRun, TicketRun

__all__ = ["DIVERGED", "DONE", "ELSEWHERE", "FAILED", "FINAL", "SKIPPED", "SUBMITTED", "WAITING", "Cannot", "Graph",
           "Node", "Scheduler", "Tally", "dataset_name", "on_cpu", "on_dataset"]


@dataclass(eq=False)
class Node:
    kind: RunKind  # what the run is: its inputs, directory, job, fused groups and status text
    ctx: Context  # what the run trains with (sent to the worker)
    here: Context  # what this process finds the run in the store with
    run: ImpRun | TicketRun | LMCRun
    dataset: str
    state: str = WAITING
    result: object = None
    error: str = ""
    directory: str = ""
    args: tuple = ()  # the job's arguments after ctx and run, once its inputs exist
    recheck_at: float = 0.0
    noted_elsewhere: bool = False
    looked: bool = False  # its inputs exist and the store was asked for its result once
    #: " (on DATASET)" when the experiment trains on several datasets (set by `Graph`)
    place: str = ""

    @property
    def label(self) -> str:
        return self.run.label + self.place

    def cached(self):
        """The run's result in the store (None: not finished); its inputs known."""
        return self.kind.cached(self)

    def describe(self, result) -> str:
        return self.kind.describe(result)


class Graph:
    """The runs of one experiment and what each needs.

    With `lookups_on_cpu` (runs train in other processes), this process finds runs in the store
    with its datasets on the CPU (it only names runs: dataset names and sizes), so the device
    stays free for the workers; otherwise it trains too and shares its datasets with the runs.
    """

    def __init__(self, imp: list[tuple[Context, ImpRun]], tickets: list[tuple[Context, TicketRun]],
                 lmc: list[tuple[Context, LMCRun]], lookups_on_cpu: bool = False):
        def node(kind: RunKind, ctx: Context, run) -> Node:
            here = on_cpu(ctx) if lookups_on_cpu else ctx
            return Node(kind, ctx, here, run, dataset_name(here))

        self.imp: dict[tuple[str, str, int], Node] = {}
        for ctx, run in imp:
            n = node(IMP, ctx, run)
            n.directory = str(imp_directory(n.here, run))
            self.imp[(n.dataset, run.model, run.seed)] = n
        self.tickets = [node(TICKET, ctx, run) for ctx, run in tickets]
        self.ticket_nodes = {(n.dataset, n.run): n for n in self.tickets}
        self.lmc = [node(LMC, ctx, run) for ctx, run in lmc]
        self.nodes: list[Node] = [*self.imp.values(), *self.tickets, *self.lmc]
        if len({n.dataset for n in self.nodes}) > 1:
            # the same run label in two parts of the experiment: say which dataset each trains on
            for n in self.nodes:
                if not getattr(n.run, "dataset", ""):  # an IMP run on another dataset names it already
                    n.place = f" (on {n.dataset})"
        self._levels: dict[Node, tuple[float, list[LevelCost]]] = {}

    # -- what a node needs ------------------------------------------------------------------------
    def levels(self, imp: Node, at_least: int, max_age: float = 0.0) -> list[LevelCost]:
        """The priced levels of an IMP node: from its outcome when finished, else from the store
        (read again when a level past those known is asked for and the last read is older than `max_age`)."""
        if imp.state == DONE:
            return list(imp.result.levels)
        seen, known = self._levels.get(imp, (0.0, []))
        if len(known) <= at_least and time.time() - seen >= max_age:
            known = imp_levels(imp.here, imp.run, Path(imp.directory))
            self._levels[imp] = (time.time(), known)
        return known

    def level(self, ctx: Context, model: str, seed: int, level: int, max_age: float) -> LevelCost | Cannot | None:
        """IMP level `level` of (model, seed) on ctx's dataset: its cost, None while it does not
        exist yet, or why it never will."""
        imp = self.imp.get((dataset_name(ctx), model, seed))
        if imp is None:
            return Cannot(f"no IMP run of {model} (seed {seed})")
        if imp.state in (FAILED, SKIPPED):
            return Cannot(f"skipped: IMP on {model} (seed {seed}) failed")
        levels = self.levels(imp, level, max_age)
        if len(levels) > level:
            return levels[level]
        if imp.state == DONE:
            return Cannot(f"skipped: IMP did not reach level {level}")
        return None

    on_dataset = staticmethod(on_dataset)

    def inputs(self, node: Node, max_age: float = 0.0) -> tuple | Cannot | None:
        """The job arguments of `node` (after ctx and run) once what it needs exists; None while
        waiting; `Cannot` when it never will."""
        return node.kind.inputs(self, node, max_age)

    def read_store(self) -> int:
        """Mark every run whose result is in the store done (with its result); the number of them."""
        done = 0
        for node in self.nodes:  # IMP first: the others need its levels
            found = self.inputs(node)
            if not isinstance(found, tuple):
                continue
            node.args = found
            node.directory = self.directory(node)
            result = node.cached()
            if result is not None:
                node.state, node.result = (DIVERGED if isinstance(result, Diverged) else DONE), result
                done += 1
        return done

    def directory(self, node: Node) -> str:
        return node.kind.directory(node)


@dataclass
class Tally:
    trained: int = 0
    cached: int = 0
    by_others: int = 0  # finished by another worker while this runner waited
    failures: list[tuple[str, str]] = field(default_factory=list)
    diverged: list[tuple[str, str]] = field(default_factory=list)  # ticket runs kept as diverged
    fused: int = 0  # runs whose training was done in a fused group


class Scheduler:
    """Runs a `Graph` through a launcher (see `launch.py`), reading the store between completions."""

    def __init__(self, graph: Graph, launcher, settings: WorkerSettings, progress, poll: float = 2.0,
                 fuse: int | None = 1):
        """`fuse`: trainings per fused group (None: the default for each network's device; 1: none fused)."""
        self.graph, self.launcher, self.settings = graph, launcher, settings
        self.progress, self.poll, self.fuse = progress, poll, fuse
        self.tally = Tally()
        self._sizes: dict[tuple, int] = {}

    def _finish(self, node: Node, result, note: str) -> None:
        node.result = result
        if isinstance(result, Diverged):
            node.state = DIVERGED
            self.tally.diverged.append((node.label, result.error))
            note = f"diverged at step {result.step} (kept)"
        else:
            node.state = DONE
        self.progress.finish(node.label, note)

    def _fail(self, node: Node, state: str, error: str, note: str) -> None:
        node.state, node.error = state, error
        self.tally.failures.append((node.label, error))
        self.progress.finish(node.label, note)

    def _try_start(self, node: Node) -> bool:
        """Start `node` if its inputs exist and nobody holds it (with the ready runs it fuses with,
        see `fusion.py`); True if something changed."""
        ready = self._ready(node)
        if ready is not True:
            return ready == "changed"
        members, size = self._group(node) or ([node], 1)
        self._submit(members, size)
        return True

    def _task(self, node: Node) -> Task:
        return Task(key=node, label=node.label, directory=node.directory, fn=node.kind.job, ctx=node.ctx,
                    args=(node.run, *node.args), cached=node.kind.cached_job, settings=self.settings)

    def _ready(self, node: Node, need_slot: bool = True) -> bool | str:
        """True if `node` can start now (its inputs exist, the store has no result, nobody holds it);
        else "changed" if its state changed (finished from the store, skipped) or False.

        The store is asked whether the run is finished when its inputs first exist, then only when
        a launcher slot is free or another worker had it (so a long queue of ready runs costs no
        file-system traffic while every slot is busy).
        """
        full = need_slot and self.launcher.in_flight() >= self.launcher.slots
        if not node.looked:
            found = self.graph.inputs(node, max_age=self.poll)
            if isinstance(found, Cannot):
                if found.failed:
                    self._fail(node, SKIPPED, found.reason, found.reason)
                else:
                    node.state, node.error = SKIPPED, found.reason
                    self.progress.finish(node.label, found.reason)
                return "changed"
            if found is None:
                return False
            node.args = found
            node.directory = self.graph.directory(node)
            node.looked = True
        elif node.state != ELSEWHERE and full:
            return False
        done = node.cached()
        if done is not None:
            if node.state == ELSEWHERE:
                self.tally.by_others += 1
                self._finish(node, done, "finished by another worker")
            else:
                self.tally.cached += 1
                self._finish(node, done, "read from the store")
            return "changed"
        if full:
            return False
        busy = holder(node.directory, self.settings.lease_timeout)
        if busy is not None:
            self._elsewhere(node, busy)
            return False
        return True

    # -- fused groups ----------------------------------------------------------------------------
    def _size(self, node: Node) -> int:
        key = node.kind.fusion_key(node.ctx, node.run)
        if key not in self._sizes:
            self._sizes[key] = fusion.group_size(node.ctx, node.here, node.kind.network(node.run), self.fuse)
        return self._sizes[key]

    def _group(self, node: Node) -> tuple[list[Node], int] | None:
        """`node` and the ready runs that train with it in one fused group, and the group's size
        (trainings at once); None when it trains alone."""
        if self.fuse == 1:  # every kind of run (IMP, ticket, LMC) can train in a fused group
            return None
        size = self._size(node)
        wanted = node.kind.members_per_group(size)
        key = node.kind.fusion_key(node.ctx, node.run)
        members = [node]
        for other in self.graph.nodes:
            if len(members) >= wanted:
                break
            if (other is node or other.kind != node.kind or other.state != WAITING
                    or other.kind.fusion_key(other.ctx, other.run) != key):
                continue
            if self._ready(other, need_slot=False) is True:
                members.append(other)
        return (members, size) if node.kind.worth_fusing(len(members), size) else None

    def _submit(self, members: list[Node], size: int) -> None:
        """One task for the runs `members` (a lone run is a group of one), `size` trainings at once."""
        first = members[0]
        label = (first.label if len(members) == 1
                 else f"{first.kind.network(first.run)}: {len(members)} {first.kind.group_noun(first.run)} fused")
        train = functools.partial(first.kind.trainer, size=size)
        group = GroupTask(key=tuple(members), label=label, members=tuple(self._task(n) for n in members),
                          train=train, settings=self.settings)
        for n in members:
            n.state = SUBMITTED
        self.progress.start(label)
        self.launcher.submit(group)
        self._collect(0.0)  # an inline launcher has finished it already

    def _complete_group(self, group: GroupTask, outcome: GroupOutcome | None, error: str | None) -> None:
        if outcome is None:  # the whole task failed (its worker died, its SLURM job ended without a result)
            for member in group.members:
                self._complete(member, None, error)
            return
        if outcome.error is not None:
            self.progress.say(f"        {group.label}: failed ({first_line(outcome.error)}); its runs go on one by one")
        self.tally.fused += outcome.fused
        for member, (result, err) in zip(group.members, outcome.members):
            self._complete(member, result, err)

    def _collect(self, timeout: float) -> bool:
        done = self.launcher.wait(timeout)
        for task, outcome, error in done:
            self._complete_group(task, outcome, error)
        return bool(done)

    def _elsewhere(self, node: Node, who) -> None:
        node.state = ELSEWHERE
        node.recheck_at = time.time() + self.poll
        if not node.noted_elsewhere:
            node.noted_elsewhere = True
            where = f" on {who.where()}" if who is not None else ""
            self.progress.say(f"        {node.label}: running elsewhere{where}; waiting for it")

    def _complete(self, task: Task, outcome, error: str | None) -> None:
        node: Node = task.key
        if isinstance(outcome, Failed):
            error = outcome.error
        if error is not None:
            self._fail(node, FAILED, error, f"FAILED: {first_line(error)}")
        elif isinstance(outcome, Busy):
            self._elsewhere(node, outcome.holder)
        elif isinstance(outcome, Finished):
            if outcome.trained:
                self.tally.trained += 1
                self._finish(node, outcome.result, node.describe(outcome.result))
            else:
                self.tally.by_others += 1
                self._finish(node, outcome.result, "finished by another worker")

    def run(self) -> Tally:
        nodes = self.graph.nodes
        while True:
            changed = False
            now = time.time()
            for node in nodes:
                if node.state in FINAL or node.state == SUBMITTED:
                    continue
                if node.state == ELSEWHERE and now < node.recheck_at:
                    continue
                changed |= self._try_start(node)
            changed |= self._collect(0.0)
            if all(n.state in FINAL for n in nodes):
                return self.tally
            if not changed:
                self.progress.running(self.launcher.running())
                self._collect(self.poll)
