"""`elth experiment NAME --status`: where every run of an experiment stands, read from the store alone.

Per run: done (with its result), running (where and since when, from its lease), queued (a batch
job submitted for it has not started yet), stalled (a lease whose heartbeat stopped: its worker
died, and the next runner takes it over), failed (the last line of the error of its last attempt),
ready (what it needs exists; no worker has it) or waiting (for the IMP level or the ticket it needs). No runner
or launcher is asked; SLURM is, once per survey, about the jobs runs wait for (pending, and why, or gone).
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from elth.experiments.attempts import (
    busy_seconds,
    first_line,
    read_attempts,
    read_failure,
    read_submitted,
)
from elth.experiments.dag import DIVERGED, DONE, Cannot, Graph, Node
from elth.experiments.jobs import Diverged
from elth.experiments.lease import DEFAULT_TIMEOUT, current
from elth.experiments.slurm_launcher import slurm_job_states
from elth.files import SUBMITTED_FILE

STATES = ("done", "diverged", "running", "queued", "stalled", "failed", "ready", "waiting", "cannot run")


@dataclass(frozen=True)
class RunStatus:
    label: str
    kind: str
    state: str  # one of STATES
    detail: str
    directory: str = ""


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds / 3600:.1f} h ago"


class SlurmQueue:
    """What SLURM says of the jobs runs wait for: asked once for all the jobs given (one squeue for a
    whole survey); a job not among them is asked about on its own."""

    def __init__(self, jobs: Iterable[str] = ()):
        self._asked = set(jobs)
        self._states = slurm_job_states(sorted(self._asked)) if self._asked else {}

    def state(self, job: str) -> tuple[str, str] | None:
        """(state, reason), the state '' when SLURM no longer knows the job; None when squeue cannot tell."""
        if self._states is not None and job not in self._asked:
            more = slurm_job_states([job])
            if more is None:
                return None
            self._asked.add(job)
            self._states.update(more)
        return None if self._states is None else self._states.get(job, ("", ""))


def _slurm_jobs(graph: Graph) -> list[str]:
    """The SLURM jobs submitted for runs in the graph's stores (`submitted.json`, one listing per store)."""
    jobs = []
    for root in {n.ctx.root for n in graph.nodes}:
        for path in Path(root).glob(f"*/{SUBMITTED_FILE}"):
            submitted = read_submitted(path.parent)
            if submitted is not None and submitted.get("launcher") == "slurm":
                jobs.append(str(submitted.get("job")))
    return jobs


def run_status(graph: Graph, node: Node, lease_timeout: float = DEFAULT_TIMEOUT,
               slurm: SlurmQueue | None = None) -> RunStatus:
    """The state of one run (after `graph.read_store()` has marked the finished ones); `slurm`: what
    SLURM said of the jobs of a whole survey (None: asked for this run's job alone)."""
    if node.state == DONE:
        return RunStatus(node.label, node.kind.name, "done", node.describe(node.result), node.directory)
    if node.state == DIVERGED:
        return RunStatus(node.label, node.kind.name, "diverged", node.describe(node.result), node.directory)
    found = graph.inputs(node)
    if isinstance(found, Cannot):
        return RunStatus(node.label, node.kind.name, "cannot run", found.reason.removeprefix("skipped: "))
    if found is None:
        return RunStatus(node.label, node.kind.name, "waiting", node.kind.needs(node.run))
    node.args = found
    directory = graph.directory(node)
    extra = node.kind.progress(graph, node)
    _, lease = current(directory)
    if lease is not None and not lease.released:
        since = f"since {_clock(lease.started)}, heartbeat {_ago(lease.age())}"
        if lease.live(lease_timeout):
            return RunStatus(node.label, node.kind.name, "running", f"on {lease.where()} {since}{extra}", directory)
        return RunStatus(node.label, node.kind.name, "stalled",
                         f"on {lease.where()} {since}: its worker is gone; the next runner takes it over{extra}",
                         directory)
    finished = node.cached()  # finished since the store was read
    if finished is not None:
        state = "diverged" if isinstance(finished, Diverged) else "done"
        return RunStatus(node.label, node.kind.name, state, node.describe(finished), directory)
    failure = read_failure(directory)
    submitted = read_submitted(directory)
    if submitted is not None and (failure is None or submitted.get("time", 0) > failure.get("time", 0)):
        is_slurm = submitted.get("launcher") == "slurm"
        job = f"SLURM job {submitted.get('job')}" if is_slurm else f"job {submitted.get('job')} ({submitted.get('launcher')})"
        when = f"submitted {_clock(submitted.get('time', 0))} from {submitted.get('by', '?')}"
        said = (slurm or SlurmQueue()).state(str(submitted.get("job"))) if is_slurm else None
        if said is not None:
            state, reason = said
            if not state:
                return RunStatus(node.label, node.kind.name, "failed",
                                 f"{job}, {when}, is no longer in SLURM's queue and never started the run "
                                 f"(cancelled, or it failed before elth began){extra}", directory)
            if state == "PENDING":
                return RunStatus(node.label, node.kind.name, "queued",
                                 f"{job}, {when}; pending: {reason or 'no reason given'}{extra}", directory)
        return RunStatus(node.label, node.kind.name, "queued", f"{job}, {when}; not started yet{extra}", directory)
    if failure is not None:
        line = first_line(failure.get("error", ""))
        return RunStatus(node.label, node.kind.name, "failed",
                         f"{line} (on {failure.get('host', '?')}, {_clock(failure.get('time', 0))})", directory)
    tries = sum(1 for a in read_attempts(directory) if a.get("event") == "start")
    note = f"; {tries} earlier attempt(s)" if tries else ""
    return RunStatus(node.label, node.kind.name, "ready", f"its inputs exist; no worker has it{note}{extra}", directory)


def pace(graph: Graph, statuses: list[RunStatus]) -> str:
    """A rough time to go: the finished runs' trainings against the time any of them was training
    (`busy_seconds`: with the workers of the runs so far), applied to the trainings left (an
    unfinished IMP run's trained levels are not left)."""
    finished = ("done", "diverged")
    done = [(s, n) for s, n in zip(statuses, graph.nodes) if s.state in finished]
    left = sum(n.kind.trainings(n.run) - n.kind.trained(graph, n)
               for s, n in zip(statuses, graph.nodes) if s.state not in (*finished, "cannot run"))
    seconds = busy_seconds(s.directory for s, _ in done if s.directory)
    count = sum(n.kind.trainings(n.run) for _, n in done)
    if not left or not count or seconds <= 0:
        return ""
    each = seconds / count
    return (f"pace so far: {count} trainings of finished runs in {_span(seconds)} of training time "
            f"({_span(each)} each); the {left} trainings left, about {_span(each * left)} at that pace "
            "(the same workers; runs differ in size, so a rough guide)")


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def survey(graph: Graph, lease_timeout: float = DEFAULT_TIMEOUT) -> list[RunStatus]:
    graph.read_store()
    slurm = SlurmQueue(_slurm_jobs(graph))
    return [run_status(graph, n, lease_timeout, slurm) for n in graph.nodes]


def format_status(title: str, statuses: list[RunStatus], verbose: bool = True, pace_line: str = "") -> str:
    counts = Counter(s.state for s in statuses)
    summary = ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
    lines = [f"{title}: {len(statuses)} runs: {summary}"] + ([pace_line] if pace_line else [])
    width = max((len(s.label) for s in statuses), default=0)
    for s in statuses:
        if verbose or s.state != "done":
            lines.append(f"  {s.label:<{width}}  {s.state:<8}  {s.detail}")
    return "\n".join(lines)
