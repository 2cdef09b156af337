"""Run an experiment: expand its spec, execute the runs (cached, resumable, optionally in parallel),
and write the tidy results table.

IMP runs go first (every other ticket derives from an IMP ticket: the source's for ETTs, the
target's for the sparsity-matched baselines). Runs whose results are already in the store are read
back, not trained; a failing run is reported with its traceback and the others go on; the
experiment then ends with an error naming the failures.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from elth.errors import ElthError
from elth.experiments.jobs import (
    LMC_SEED_OFFSET,
    Context,
    Diverged,
    ImpOutcome,
    LevelCost,
    TicketOutcome,
    imp_cached,
    lmc_cached,
    run_imp_group_job,
    run_imp_job,
    run_lmc_job,
    prepare_ticket_job,
    run_ticket_job,
    settings,
    ticket_cached,
    train_ticket_group_job,
)
from elth.experiments.jobs import (
    dataset as context_data,
)
from elth.experiments.results import Row, write_lmc, write_results
from elth.experiments.spec import Experiment, ImpRun, LMCRun, Setup, TicketRun, expand
from elth.files import EXPERIMENT_FILE, write_json_atomic
from elth.methods import curve_label, method
from elth.models import build_model
from elth.tickets import load_ticket
from elth.training import default_device, distributed
from elth.training.fused import default_group_size


class ExperimentFailed(ElthError):
    """Some runs of an experiment failed (the others finished and are kept)."""


@dataclass
class Outcome:
    rows: list[Row]
    out_dir: Path
    trained: int = 0
    cached: int = 0
    #: IMP runs, ticket trainings and LMC copies handed to fused groups (the runs count in `trained` too)
    fused: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: ticket runs whose training diverged, kept because the experiment was asked to (label, error)
    diverged: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Task:
    label: str
    fn: Callable
    args: tuple


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


class _Progress:
    """'[i/N] label' lines, and with workers an overall bar (the runs' own bars are off then)."""

    def __init__(self, total: int, enabled: bool, bar: bool):
        self.total, self.done, self.enabled = total, 0, enabled
        self.bar = tqdm(total=total, desc="experiment runs", unit="run", file=sys.stderr,
                        dynamic_ncols=True) if enabled and bar else None

    def say(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text, file=sys.stderr)

    def start(self, label: str) -> None:
        if self.bar is None:
            self.say(f"[{self.done + 1}/{self.total}] {label}")

    def finish(self, label: str, note: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.say(f"[{self.done}/{self.total}] {label}: {note}")
        elif note:
            self.say(f"        {label}: {note}")

    def skip(self, label: str, note: str) -> None:
        """A run that needs no work (read from the store) or cannot run: one line."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        self.say(f"[{self.done}/{self.total}] {label}: {note}")

    def running(self, labels: list[str]) -> None:
        """Show what the workers are busy with (the bar's postfix)."""
        if self.bar is not None:
            self.bar.set_postfix_str("running: " + "; ".join(labels) if labels else "", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def worker_threads(workers: int, threads: int | None = None) -> int:
    """Torch threads per worker process: `threads`, else the cores shared out evenly."""
    return threads if threads else max(1, (os.cpu_count() or 1) // workers)


def _pool(workers: int, threads: int | None):
    """The worker processes (spawned, so no state leaks in), or nothing for one worker."""
    if workers <= 1:
        return contextlib.nullcontext(None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_init_worker, initargs=(worker_threads(workers, threads),))


def _execute(tasks: list[_Task], pool: ProcessPoolExecutor | None, progress: _Progress,
             describe: Callable[[object], str]):
    """Run `tasks` (here, or in `pool`); yields (task, result or None, error text or None) as they finish."""
    if not tasks:
        return
    if pool is None:
        for t in tasks:
            progress.start(t.label)
            try:
                result = t.fn(*t.args)
            except Exception as exc:  # reported and counted; the other runs go on
                err = failure_text(exc)
                progress.finish(t.label, f"FAILED: {first_line(err)}")
                yield t, None, err
                continue
            progress.finish(t.label, describe(result))
            yield t, result, None
        return
    futures = {pool.submit(t.fn, *t.args): t for t in tasks}
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
        for fut in done:
            t = futures[fut]
            exc = fut.exception()
            if exc is not None:
                err = failure_text(exc)
                progress.finish(t.label, f"FAILED: {first_line(err)}")
                yield t, None, err
            else:
                progress.finish(t.label, describe(fut.result()))
                yield t, fut.result(), None
        progress.running([futures[f].label for f in pending if f.running()])


def failure_text(exc: BaseException) -> str:
    """An expected failure (ElthError: bad settings, a diverged training) as its message; anything else
    as its traceback, which a bug report needs."""
    if isinstance(exc, ElthError):
        return str(exc)
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def first_line(text: str) -> str:
    """The line of a failure text that says what happened (a traceback's last line)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if len(lines) > 1 and lines[0].startswith("Traceback") else (lines[0] if lines else "")


def _describe_imp(o: ImpOutcome) -> str:
    last = o.levels[-1]
    return f"level {last.level} at {100 * last.sparsity:.2f}% sparsity: {100 * last.accuracy:.2f}%"


def _describe_ticket(o: TicketOutcome | Diverged) -> str:
    if isinstance(o, Diverged):
        return f"DIVERGED at step {o.step} (kept)"
    return f"{100 * o.accuracy:.2f}% at {100 * o.sparsity:.2f}% sparsity ({o.seconds:.0f}s)"


def context_for(setup: Setup, root: str | os.PathLike, *, data_dir=None, device=None, progress=True,
                keep_diverged: bool = False) -> Context:
    return Context(
        root=str(root), dataset=setup.dataset, data_dir=None if data_dir is None else str(data_dir),
        device=device, preset=setup.preset, protocol=setup.protocol, rewind=setup.rewind,
        prune_fraction=setup.prune_fraction, progress=progress, keep_diverged=keep_diverged,
    )


def run_experiment(
    experiment: Experiment,
    scale: str,
    *,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    seeds: int | None = None,
    workers: int = 1,
    data_dir: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    setups: tuple[Setup, ...] | None = None,
    command: str | None = None,
    keep_diverged: bool = False,
    fuse: int | None = None,
) -> Outcome:
    """Execute every run of `experiment` at `scale` and write `results.jsonl`/`.csv` to `out_dir`.

    `workers` > 1 runs independent runs in that many spawned processes with `threads` torch
    threads each (default: the cores shared out); with one worker everything runs here, with
    `threads` torch threads when given. `setups` replaces the spec's parts for `scale` (the demo
    uses it to pick its dataset). Raises `ExperimentFailed` after writing the results of the runs
    that finished. `keep_diverged`: a ticket run whose training diverges is recorded as diverged
    (listed in experiment.json and the report, no row in the results) instead of failing the experiment;
    an IMP run that diverges still fails (its later levels cannot be made). `fuse` K > 1 trains
    runs of one network that share dataset, protocol and rewind step K at a time as one fused
    network (`elth.training.fused`; the same run directories and results as one at a time): IMP
    runs of different seeds level by level, ticket runs, LMC copies. None picks K from the device
    and the model; 1 trains every run alone.
    """
    if workers < 1:
        raise ElthError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ElthError(f"--threads must be at least 1, got {threads}")
    if fuse is not None and fuse < 1:
        raise ElthError(f"--fuse must be at least 1, got {fuse}")
    if workers > 1 and distributed.is_active():
        raise ElthError("--workers runs trainings side by side in worker processes; with several ranks "
                        "(torchrun, --nproc) every training uses all of them: leave --workers at 1")
    if distributed.is_active():
        if fuse is not None and fuse > 1:
            raise ElthError("--fuse does not combine with several ranks (torchrun, --nproc) yet: leave it out")
        fuse = 1  # fused groups train on one process
    if workers == 1 and threads:
        torch.set_num_threads(threads)
    start = time.time()
    parts = tuple(s.with_seeds(seeds) for s in (setups or experiment.setups(scale)))
    plans = [expand(s) for s in parts]
    ctxs = [context_for(s, root, data_dir=data_dir, device=device, progress=progress and workers == 1,
                        keep_diverged=keep_diverged) for s in parts]
    out = Path(out_dir)
    # One IMP run per network, dataset and seed, however many parts need it.
    unique: dict[tuple, tuple[Context, ImpRun]] = {}
    for c, p in zip(ctxs, plans):
        for r in p.imp:
            on = _on(c, r.dataset)
            known = unique.get((on, r.model, r.seed))
            if known is None or known[1].levels < r.levels:  # the deepest any part needs
                unique[(on, r.model, r.seed)] = (on, r)
    imp_runs = list(unique.values())
    total = len(imp_runs) + sum(len(p.tickets) + len(p.lmc) for p in plans)
    bar = _Progress(total, progress, bar=workers > 1)
    outcome = Outcome(rows=[], out_dir=out)
    bar.say(f"{experiment.name} ({scale}): {len(imp_runs)} IMP runs, "
            f"{sum(len(p.tickets) for p in plans)} other tickets, {parts[0].seeds} seed(s); store {root}")
    try:
        with _pool(workers, threads) as pool:
            imp = _run_imp_phase(imp_runs, pool, bar, outcome, fuse)
            tickets = _run_ticket_phase([(c, r) for c, p in zip(ctxs, plans) for r in p.tickets], imp, pool,
                                        bar, outcome, fuse)
            lmc = _run_lmc_phase([(c, r) for c, p in zip(ctxs, plans) for r in p.lmc], imp, tickets, pool, bar,
                                 outcome, fuse)
    finally:
        bar.close()
    outcome.rows = _imp_rows(experiment.name, scale, imp) + _ticket_rows(experiment.name, scale, tickets)
    outcome.seconds = time.time() - start
    write_results(outcome.rows, out)
    if any(p.lmc for p in plans):
        write_lmc(lmc, out)
    looked_up = [_looked_up(c, workers > 1) for c in ctxs]
    write_json_atomic(out / EXPERIMENT_FILE, _meta(experiment, scale, parts, looked_up, outcome, command))
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


def _on(ctx: Context, dataset: str) -> Context:
    """The context of `ctx`'s experiment on another dataset ("" or None: `ctx` itself)."""
    return dataclasses.replace(ctx, dataset=dataset) if dataset else ctx


def _dataset_name(ctx: Context) -> str:
    return context_data(ctx).info.name


def _looked_up(ctx: Context, with_workers: bool) -> Context:
    """The context this process finds runs in the store with. With worker processes it only names
    runs (dataset names and sizes), so its datasets load on the CPU and the device stays free for
    the workers; with none, this process trains too and shares its datasets with the runs."""
    return dataclasses.replace(ctx, device="cpu") if with_workers else ctx


ImpKey = tuple[str, str, int]  # (dataset, model, seed)


def _run_imp_phase(runs: list[tuple[Context, ImpRun]], pool, bar, outcome, fuse: int | None = 1) -> dict[ImpKey, ImpOutcome]:
    done: dict[ImpKey, ImpOutcome] = {}
    todo = []
    for ctx, run in runs:
        here = _looked_up(ctx, pool is not None)
        if imp_cached(here, run):
            done[(_dataset_name(here), run.model, run.seed)] = run_imp_job(here, run)
            outcome.cached += 1
            bar.skip(run.label, "read from the store")
        else:
            todo.append(_Task(run.label, run_imp_job, (ctx, run)))
    if fuse != 1:
        outcome.fused += _advance_imp_together(todo, pool, bar, fuse)
    for task, result, err in _execute(todo, pool, bar, _describe_imp):
        if err is not None:
            outcome.failures.append((task.label, err))
        else:
            done[(_dataset_name(_looked_up(task.args[0], pool is not None)), result.model, result.seed)] = result
            outcome.trained += 1
    return done


def _advance_imp_together(todo: list[_Task], pool, bar: _Progress, fuse: int | None) -> int:
    """IMP runs of one network (different seeds) advance level by level in fused groups of `fuse`
    (None: the default for the device and model); their jobs then read them back. A group that
    fails is reported and its runs go on one by one. The number of runs advanced in groups."""
    groups: dict[tuple, list[ImpRun]] = {}
    for t in todo:
        ctx, run = t.args
        groups.setdefault((ctx, run.model), []).append(run)
    tasks = []
    for (ctx, model), runs in groups.items():
        size = fuse if fuse is not None else _default_group_size(ctx, model, pool is not None)
        for start in range(0, len(runs), size):
            chunk = runs[start : start + size]
            if len(chunk) > 1:
                label = f"IMP on {model}, seeds {', '.join(str(r.seed) for r in chunk)}: fused level by level"
                tasks.append(_Task(label, run_imp_group_job, (ctx, chunk, size)))
    return _run_groups(tasks, pool, bar)


def _run_groups(tasks: list[_Task], pool, bar: _Progress) -> int:
    """Run fused-group tasks (each returns how many runs it trained); the total of those that succeeded."""
    quiet = _Progress(0, False, bar=False)
    done = 0
    for task, trained, err in _execute(tasks, pool, quiet, lambda _: ""):
        bar.say(f"{task.label}: " + ("done" if err is None else
                f"failed ({err.strip().splitlines()[-1]}); its runs go on one by one"))
        done += trained if err is None else 0
    return done


def _bases(ctx: Context, run: TicketRun, imp: dict) -> tuple[LevelCost, LevelCost] | str:
    """(basis, like) of a ticket run, or why it cannot run."""
    ds = _dataset_name(ctx)
    target = imp.get((ds, run.target, run.seed))
    source = imp.get((_dataset_name(_on(ctx, run.source_dataset)), run.source, run.seed)) if run.source else target
    if target is None or source is None:
        missing = run.target if target is None else run.source
        return f"skipped: IMP on {missing} (seed {run.seed}) failed"
    if len(source.levels) <= run.level or len(target.levels) <= run.level:
        return f"skipped: IMP did not reach level {run.level}"
    return source.levels[run.level], target.levels[run.level]


TicketKey = tuple[str, TicketRun]  # (dataset, run)


def _run_ticket_phase(runs: list[tuple[Context, TicketRun]], imp, pool, bar, outcome,
                      fuse: int | None = 1) -> dict[TicketKey, TicketOutcome]:
    done: dict[TicketKey, TicketOutcome] = {}
    todo = []
    for ctx, run in runs:
        here = _looked_up(ctx, pool is not None)
        bases = _bases(here, run, imp)
        if isinstance(bases, str):
            outcome.failures.append((run.label, bases))
            bar.skip(run.label, bases)
            continue
        cached = ticket_cached(here, run, *bases)
        if isinstance(cached, Diverged):
            outcome.diverged.append((run.label, cached.error))
            outcome.cached += 1
            bar.skip(run.label, f"diverged at step {cached.step} (recorded)")
        elif cached is not None:
            done[(_dataset_name(here), run)] = cached
            outcome.cached += 1
            bar.skip(run.label, "read from the store")
        else:
            todo.append(_Task(run.label, run_ticket_job, (ctx, run, *bases)))
    if fuse != 1:
        outcome.fused += _train_fused_groups(todo, pool, bar, fuse)
    for task, result, err in _execute(todo, pool, bar, _describe_ticket):
        ctx, run = task.args[0], task.args[1]
        if err is not None:
            outcome.failures.append((task.label, err))
        elif isinstance(result, Diverged):
            outcome.diverged.append((task.label, result.error))
            outcome.trained += 1
        else:
            done[(_dataset_name(_looked_up(ctx, pool is not None)), run)] = result
            outcome.trained += 1
    return done


def _train_fused_groups(todo: list[_Task], pool, bar: _Progress, fuse: int | None) -> int:
    """Make the tickets of the runs in `todo` and train those of one target, protocol and rewind
    step together, `fuse` at a time (None: the default for the device and model). The runs'
    jobs then find their trainings finished. A group that fails is reported and its runs train
    one by one in their own jobs (which report their own errors). The number of tickets trained
    in groups."""
    runs = [t for t in todo if method(t.args[1].method).dst is None]
    if len(runs) < 2:
        return 0
    quiet = _Progress(0, False, bar=False)
    made: list[tuple[Context, TicketRun, str]] = []
    prepare = [_Task(t.label, prepare_ticket_job, t.args) for t in runs]
    for task, path, err in _execute(prepare, pool, quiet, lambda _: ""):
        if err is None:
            made.append((task.args[0], task.args[1], path))
    if made:
        bar.say(f"training {len(made)} tickets in fused groups")
    return _train_ticket_groups([(ctx, run.target, path, run.seed) for ctx, run, path in made], pool, bar, fuse)


def _train_ticket_groups(items: list[tuple[Context, str, str, int]], pool, bar: _Progress, fuse: int | None) -> int:
    """Train the saved tickets `items` ((context, target, ticket path, data seed)) in fused groups:
    those of one target and rewind step together, `fuse` at a time (None: the default for the
    device and model). The number of trainings done in groups."""
    groups: dict[tuple, list[tuple[str, int]]] = {}
    for ctx, target, path, seed in items:
        groups.setdefault((ctx, target, load_ticket(path).rewind_step), []).append((path, seed))
    tasks = []
    for (ctx, target, rewind_step), members in groups.items():
        size = fuse if fuse is not None else _default_group_size(ctx, target, pool is not None)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            if len(chunk) > 1:
                label = f"{target} from step {rewind_step}: {len(chunk)} tickets fused"
                tasks.append(_Task(label, train_ticket_group_job, (ctx, target, chunk, size)))
    return _run_groups(tasks, pool, bar)


def _default_group_size(ctx: Context, target: str, with_workers: bool) -> int:
    s = settings(_looked_up(ctx, with_workers), target)
    info = s.info
    model = build_model(target, info.input_shape, info.num_classes, seed=0)
    device = ctx.device if ctx.device is not None else default_device()
    return default_group_size(model, info.input_shape, s.protocol.batch_size, device)


def _lmc_ticket(ctx: Context, run: LMCRun, imp: dict, tickets: dict) -> tuple[str, str] | str:
    """(ticket path, label) of an LMC run, or why it cannot run."""
    ds = _dataset_name(ctx)
    if run.ticket is None:
        o = imp.get((ds, run.target, run.seed))
        if o is None or len(o.levels) <= run.level:
            return f"skipped: IMP on {run.target} (seed {run.seed}) did not reach level {run.level}"
        return o.levels[run.level].ticket, "IMP"
    t = tickets.get((ds, run.ticket))
    if t is None:
        return f"skipped: the ticket run {run.ticket.label} failed or diverged"
    return t.ticket, curve_label((run.ticket.method, run.ticket.source, run.ticket.strategy))


def _run_lmc_phase(runs: list[tuple[Context, LMCRun]], imp, tickets, pool, bar, outcome,
                   fuse: int | None = 1) -> list[dict]:
    done: list[dict] = []
    todo = []

    def record(ctx: Context, run: LMCRun, result: dict) -> None:
        t = run.ticket
        done.append({"dataset": _dataset_name(ctx), "target": run.target, "method": run.method,
                     "source": t.source if t else "", "strategy": t.strategy if t else "", "level": run.level,
                     "seed": run.seed, **result})

    diverged = {label for label, _ in outcome.diverged}
    for ctx, run in runs:
        if run.ticket is not None and run.ticket.label in diverged:
            bar.skip(run.label, "skipped: its ticket's training diverged (kept as diverged)")
            continue
        here = _looked_up(ctx, pool is not None)
        found = _lmc_ticket(here, run, imp, tickets)
        if isinstance(found, str):
            outcome.failures.append((run.label, found))
            bar.skip(run.label, found)
            continue
        cached = lmc_cached(here, run, found[0])
        if cached is not None:
            record(here, run, cached)
            outcome.cached += 1
            bar.skip(run.label, "read from the store")
        else:
            todo.append(_Task(run.label, run_lmc_job, (ctx, run, *found)))
    if fuse != 1 and todo:
        # Both copies of every ticket (data seeds seed and seed + LMC_SEED_OFFSET) in fused groups.
        copies = [(t.args[0], t.args[1].target, t.args[2], seed) for t in todo
                  for seed in (t.args[1].seed, t.args[1].seed + LMC_SEED_OFFSET)]
        outcome.fused += _train_ticket_groups(copies, pool, bar, fuse)
    for task, result, err in _execute(todo, pool, bar, lambda r: f"instability {100 * r['instability']:.2f} points"):
        if err is not None:
            outcome.failures.append((task.label, err))
        else:
            record(_looked_up(task.args[0], pool is not None), task.args[1], result)
            outcome.trained += 1
    return done


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
        "note": " ".join(s.note for s in parts if s.note),
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
        "wall_seconds": round(outcome.seconds, 1),
        "runs": {"trained": outcome.trained, "cached": outcome.cached, "failed": len(outcome.failures),
                 "diverged": len(outcome.diverged), "fused": outcome.fused},
        "failures": [{"run": label, "error": first_line(err)} for label, err in outcome.failures],
        "diverged": [{"run": label, "error": err} for label, err in outcome.diverged],
    }
