"""Run an experiment: expand its spec, execute the runs (cached, resumable, in parallel here or on a
cluster), and write the tidy results table.

The runs form a graph (`dag.py`): every ticket derives from IMP tickets (the source's for ETTs,
the target's for the sparsity-matched baselines), and starts as soon as the IMP levels it needs
are in the store. Where runs execute is a launcher's business (`launch.py`: this process, local
worker processes, SLURM jobs); each run is taken under a lease in its directory, so several
runners on one store share the work and never train a run twice. Runs whose results are already
in the store are read back, not trained; a failing run is reported with its traceback and the
others go on; the experiment then ends with an error naming the failures.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from elth import plugins
from elth.console import progress_bar, use_bars
from elth.console import write as write_line
from elth.data.registered import loaders as registered_loaders
from elth.errors import ElthError
from elth.experiments.attempts import busy_seconds, first_line
from elth.experiments.dag import (
    DIVERGED,
    DONE,
    Graph,
    Scheduler,
    dataset_name,
    on_cpu,
    on_dataset,
)
from elth.experiments.jobs import Context, settings
from elth.experiments.launch import LaunchOptions, make_launcher
from elth.experiments.lease import DEFAULT_TIMEOUT
from elth.experiments.leased import WorkerSettings, follow_rank_zero, leading_ranks
from elth.experiments.results import Row, write_lmc, write_results
from elth.experiments.spec import Experiment, ImpRun, Setup, expand
from elth.files import EXPERIMENT_FILE, write_json_atomic
from elth.models import families
from elth.training import distributed
from elth.training.metrics import enable_tensorboard

#: seconds between looks at the store for runs that wait on other workers
POLL_SECONDS = 2.0


class ExperimentFailed(ElthError):
    """Some runs of an experiment failed (the others finished and are kept)."""


@dataclass
class Outcome:
    rows: list[Row]
    out_dir: Path
    trained: int = 0
    cached: int = 0
    by_others: int = 0
    #: runs whose training was done in a fused group (they count in `trained` too)
    fused: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: ticket runs whose training diverged, kept because the experiment was asked to (label, error)
    diverged: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: the time its runs were being trained, over every invocation that worked on them (`busy_seconds`)
    busy_seconds: float = 0.0


class _ExperimentLines:
    """An experiment's progress: '[i/N] label' lines, and on a terminal with parallel runs an overall bar
    (the runs' own bars are off then); drawn through `console` like every bar and line elth prints."""

    def __init__(self, total: int, enabled: bool, parallel: bool):
        self.total, self.done, self.enabled, self.parallel = total, 0, enabled, parallel
        self._said: set[str] = set()
        self.bar = progress_bar(total=total, desc="experiment runs", unit="run", file=sys.stderr,
                                dynamic_ncols=True) if enabled and parallel and use_bars() else None

    def say(self, text: str) -> None:
        if self.enabled:
            write_line(text, file=sys.stderr)

    def start(self, label: str) -> None:
        if self.bar is None:
            self.say(f"        {label}: started" if self.parallel else f"[{self.done + 1}/{self.total}] {label}")

    def finish(self, label: str, note: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        self.say(f"[{self.done}/{self.total}] {label}: {note}" if note else f"[{self.done}/{self.total}] {label}")

    def running(self, labels: list[str]) -> None:
        """Show what the workers are busy with: the bar's postfix; without a bar, a line for each
        job that waits in a batch queue, once per reason it gives (SLURM: '... pending: Resources')."""
        if self.bar is not None:
            self.bar.set_postfix_str("running: " + "; ".join(labels[:4]) if labels else "", refresh=True)
        else:
            for label in labels:
                if " pending: " in label and label not in self._said:
                    self._said.add(label)
                    self.say(f"        {label}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def worker_threads(workers: int, threads: int | None = None) -> int:
    """Torch threads per worker process: `threads`, else the cores shared out evenly."""
    return threads if threads else max(1, (os.cpu_count() or 1) // workers)


def context_for(setup: Setup, root: str | os.PathLike, *, data_dir=None, device=None, progress=True,
                keep_diverged: bool = False) -> Context:
    return Context(
        root=str(root), dataset=setup.dataset, data_dir=None if data_dir is None else str(data_dir),
        device=device, preset=setup.preset, protocol=setup.protocol, rewind=setup.rewind,
        prune_fraction=setup.prune_fraction, progress=progress, keep_diverged=keep_diverged,
    )


def build_graph(experiment: Experiment, scale: str, *, root, seeds=None, data_dir=None, device=None,
                progress: bool = False, setups: tuple[Setup, ...] | None = None, lookups_on_cpu: bool = True,
                keep_diverged: bool = False):
    """(parts, contexts, graph) of an experiment at a scale: every run and what it needs.

    The contexts are what this process looks runs up with (see `Graph`)."""
    parts = tuple(s.with_seeds(seeds) for s in (setups or experiment.setups(scale)))
    plans = [expand(s) for s in parts]
    ctxs = [context_for(s, root, data_dir=data_dir, device=device, progress=progress, keep_diverged=keep_diverged)
            for s in parts]
    # One IMP run per network, dataset and seed, however many parts need it.
    unique: dict[tuple, tuple[Context, ImpRun]] = {}
    for c, p in zip(ctxs, plans):
        for r in p.imp:
            on = on_dataset(c, r.dataset)
            key = (dataset_name(on_cpu(on) if lookups_on_cpu else on), r.model, r.seed)
            known = unique.get(key)
            if known is None or known[1].levels < r.levels:  # the deepest any part needs
                unique[key] = (on, r)
    graph = Graph(list(unique.values()), [(c, r) for c, p in zip(ctxs, plans) for r in p.tickets],
                  [(c, r) for c, p in zip(ctxs, plans) for r in p.lmc], lookups_on_cpu=lookups_on_cpu)
    return parts, [on_cpu(c) if lookups_on_cpu else c for c in ctxs], graph


@dataclass(frozen=True)
class RunOptions:
    """How `run_experiment` runs an experiment (every field but `root` and `out_dir` has a default).

    `launch` says where runs execute (default: here with `workers` == 1, else `workers` spawned
    processes with `threads` torch threads each, the cores shared out by default). `setups`
    replaces the spec's parts for the scale (the demo uses it to pick its dataset).
    `lease_timeout`: seconds without a heartbeat after which another runner takes over a run.
    `keep_diverged`: a ticket run whose training diverges is recorded as diverged (listed in
    experiment.json and the report, no row in the results) instead of failing the experiment; an IMP
    run that diverges still fails (its later levels cannot be made). `fuse` K > 1: ready runs of one
    network, dataset and protocol (IMP runs of different seeds, ticket runs, LMC copies) train K at
    a time as one fused network, one task per group (`fusion.py`; the same run directories, results
    and attempt records as one at a time); None picks K from the device and the network; 1 trains
    every run alone.
    """

    root: str | os.PathLike
    out_dir: str | os.PathLike
    seeds: int | None = None
    workers: int = 1
    data_dir: str | os.PathLike | None = None
    device: str | None = None
    progress: bool = True
    threads: int | None = None
    setups: tuple[Setup, ...] | None = None
    command: str | None = None
    launch: LaunchOptions | None = None
    lease_timeout: float = DEFAULT_TIMEOUT
    tensorboard: bool = False
    poll: float = POLL_SECONDS
    keep_diverged: bool = False
    fuse: int | None = None


def run_experiment(experiment: Experiment, scale: str, options: RunOptions | None = None, **fields) -> Outcome:
    """Execute every run of `experiment` at `scale` and write `results.jsonl`/`.csv` to `out_dir`
    (`options`, or its fields as keyword arguments: see `RunOptions`). Raises `ExperimentFailed`
    after writing the results of the runs that finished.

    Over several ranks (torchrun), rank 0 runs the experiment and hands each training to every
    rank, which trains it together (`launch.leading_ranks`); the other ranks return an empty
    `Outcome` once rank 0 is done.
    """
    if options is None:
        options = RunOptions(**fields)
    elif fields:
        options = dataclasses.replace(options, **fields)
    if distributed.is_active() and not distributed.is_main():
        follow_rank_zero()
        return Outcome(rows=[], out_dir=Path(options.out_dir))
    with leading_ranks():
        return _run_experiment(experiment, scale, options)


def _run_experiment(experiment: Experiment, scale: str, o: RunOptions) -> Outcome:
    """`run_experiment` on one process (or rank 0, alone)."""
    root, progress, fuse, tensorboard = o.root, o.progress, o.fuse, o.tensorboard
    launch = o.launch or LaunchOptions(workers=o.workers, threads=o.threads)
    launch.check()
    plugins.propagate([*families.builders(), *registered_loaders()])  # workers and jobs register what this process has
    if fuse is not None and fuse < 1:
        raise ElthError(f"--fuse must be at least 1, got {fuse}")
    if distributed.in_group():
        launch.check_for_ranks()
    in_process = launch.launcher == "local" and launch.workers == 1
    if tensorboard:
        enable_tensorboard(True)  # fails early, with what to install, when tensorboard is missing
    if launch.launcher == "local" and launch.workers == 1 and launch.threads:
        torch.set_num_threads(launch.threads)
    start = time.time()
    # Runs print their own progress when they run here (one at a time) or in a job's log.
    run_progress = progress and (launch.launcher != "local" or launch.workers == 1)
    parts, ctxs, graph = build_graph(experiment, scale, root=root, seeds=o.seeds, data_dir=o.data_dir, device=o.device,
                                     progress=run_progress, setups=o.setups, lookups_on_cpu=not in_process,
                                     keep_diverged=o.keep_diverged)
    out = Path(o.out_dir)
    total = len(graph.nodes)
    bar = _ExperimentLines(total, progress, parallel=launch.launcher != "local" or launch.workers > 1)
    outcome = Outcome(rows=[], out_dir=out)
    bar.say(f"{experiment.name} ({scale}): {len(graph.imp)} IMP runs, {len(graph.tickets)} other tickets, "
            f"{parts[0].seeds} seed(s); store {root}; {launch.describe()}")
    worker = WorkerSettings(threads=launch.worker_threads(), lease_timeout=o.lease_timeout, tensorboard=tensorboard)
    try:
        with make_launcher(launch, out) as launcher:
            tally = Scheduler(graph, launcher, worker, bar, poll=o.poll, fuse=fuse).run()
    finally:
        bar.close()
    outcome.trained, outcome.cached, outcome.by_others = tally.trained, tally.cached, tally.by_others
    outcome.failures, outcome.diverged, outcome.fused = tally.failures, tally.diverged, tally.fused
    _finish(experiment, scale, parts, ctxs, graph, outcome, o.command, start)
    if outcome.failures:
        for label, err in outcome.failures:
            print(f"\n--- run failed: {label}\n{err}", file=sys.stderr)
        names = "; ".join(label for label, _ in outcome.failures[:5])
        more = f" and {len(outcome.failures) - 5} more" if len(outcome.failures) > 5 else ""
        raise ExperimentFailed(
            f"{len(outcome.failures)} of {total} runs failed ({names}{more}); the results of the others "
            f"are in {out}, and a re-run retries only the failed ones"
        )
    return outcome


def report_from_store(experiment: Experiment, scale: str, *, root, out_dir, seeds=None, data_dir=None,
                      setups: tuple[Setup, ...] | None = None, command: str | None = None) -> Outcome:
    """Write the results table of the runs of an experiment that are finished, training nothing
    (ticket runs recorded as diverged are listed as such); an error, writing nothing, when none is."""
    start = time.time()
    parts, ctxs, graph = build_graph(experiment, scale, root=root, seeds=seeds, data_dir=data_dir, setups=setups,
                                     keep_diverged=True)
    outcome = Outcome(rows=[], out_dir=Path(out_dir))
    outcome.cached = graph.read_store()
    if not outcome.cached:
        raise ElthError(f"nothing to report: no run of {experiment.name} ({scale}) is finished in {root} "
                        f"(`elth experiment {experiment.name} --scale {scale} --root {root} --status` shows where "
                        "its runs stand)")
    outcome.diverged = [(n.label, n.result.error) for n in graph.tickets if n.state == DIVERGED]
    _finish(experiment, scale, parts, ctxs, graph, outcome, command, start)
    return outcome


def _finish(experiment, scale, parts, ctxs, graph: Graph, outcome: Outcome, command, start: float) -> None:
    """The rows of the finished runs, written as the results table, with experiment.json."""
    imp = {(n.dataset, n.run.model, n.run.seed): n.result for n in graph.imp.values() if n.state == DONE}
    tickets = {(n.dataset, n.run): n.result for n in graph.tickets if n.state == DONE}
    lmc = [_lmc_record(n) for n in graph.lmc if n.state == DONE]
    outcome.rows = _imp_rows(experiment.name, scale, imp) + _ticket_rows(experiment.name, scale, tickets)
    outcome.seconds = time.time() - start
    outcome.busy_seconds = busy_seconds({n.directory for n in graph.nodes if n.state in (DONE, DIVERGED) and n.directory})
    write_results(outcome.rows, outcome.out_dir)
    if graph.lmc:
        write_lmc(lmc, outcome.out_dir)
    write_json_atomic(outcome.out_dir / EXPERIMENT_FILE, _meta(experiment, scale, parts, ctxs, outcome, command))


def _lmc_record(node) -> dict:
    run, t = node.run, node.run.ticket
    return {"dataset": node.dataset, "target": run.target, "method": run.method, "source": t.source if t else "",
            "strategy": t.strategy if t else "", "level": run.level, "seed": run.seed, **node.result}


def _imp_rows(name: str, scale: str, imp: dict) -> list[Row]:
    rows = []
    for (dataset, model, seed), o in imp.items():
        for lv in o.levels:
            rows.append(Row(
                experiment=name, scale=scale, dataset=dataset, target=model,
                method="dense" if lv.level == 0 else "imp", source="", strategy="", level=lv.level,
                sparsity=lv.sparsity, seed=seed, accuracy=lv.accuracy, train_steps=lv.train_steps,
                train_flops=lv.train_flops, mask_cost_flops=lv.mask_cost_flops, ticket=lv.ticket,
            ))
    return rows


def _ticket_rows(name: str, scale: str, tickets: dict) -> list[Row]:
    rows = []
    for (dataset, run), o in tickets.items():
        rows.append(Row(
            experiment=name, scale=scale, dataset=dataset, target=run.target, method=run.method,
            source=run.source, strategy=run.strategy, level=run.level, sparsity=o.sparsity, seed=run.seed,
            accuracy=o.accuracy, train_steps=o.train_steps, train_flops=o.train_flops,
            mask_cost_flops=o.mask_cost_flops, ticket=o.ticket,
        ))
    return rows


def describe_protocol(ctx: Context, model: str) -> str:
    s = settings(ctx, model)
    p = s.protocol
    decay = f", x{p.gamma} at {', '.join(p.milestones)}" if p.milestones else ", constant LR"
    warm = f", warmup {p.warmup}" if p.warmup not in ("0", "0it") else ""
    return (f"{p.length} at batch {p.batch_size}, SGD lr {p.lr} (momentum {p.momentum}, weight decay "
            f"{p.weight_decay}){decay}{warm}; rewind to {s.rewind}")


def _meta(experiment: Experiment, scale: str, parts, ctxs, outcome: Outcome, command) -> dict:
    return {
        "name": experiment.name,
        "title": experiment.title,
        "paper": experiment.paper,
        "description": experiment.description,
        "scale": scale,
        "note": " ".join(dict.fromkeys(s.note for s in parts if s.note)),  # parts often share one note
        "parts": [
            {
                "dataset": s.dataset,
                "members": list(s.members),
                "levels": list(s.levels),
                "imp_levels": s.imp_levels,
                "seeds": s.seeds,
                "transfers": [asdict(t) for t in s.expand_transfers()],
                "baselines": list(s.baselines),
                "lmc_levels": list(s.lmc_levels),
                "match_sparsity": s.match_sparsity,
            }
            for s in parts
        ],
        "protocols": {m: describe_protocol(c, m) for s, c in zip(parts, ctxs) for m in s.members},
        "command": command or "",
        **({"spec_file": experiment.source} if experiment.source else {}),
        "wall_seconds": round(outcome.seconds, 1),
        "busy_seconds": round(outcome.busy_seconds, 1),
        "runs": {"trained": outcome.trained, "cached": outcome.cached, "by_others": outcome.by_others,
                 "failed": len(outcome.failures), "diverged": len(outcome.diverged), "fused": outcome.fused},
        "failures": [{"run": label, "error": first_line(err)} for label, err in outcome.failures],
        "diverged": [{"run": label, "error": err} for label, err in outcome.diverged],
    }
