"""The work of one run, importable by worker processes: IMP on one network, or one ticket made and trained.

Every run is cached under the store root: IMP in `imp-<hash>/` (see `elth.workflows.imp`), each
other ticket in `ticket-<hash>/` holding the ticket (`ticket.safetensors`) and, once trained, its
`result.json`. The hash covers everything that determines the result, so a finished run is read
back instead of trained again and an interrupted one resumes from its checkpoints.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from elth.experiments.spec import DST_BASELINES, ImpRun, LMCRun, TicketRun
from elth.files import LMC_FILE, RESULT_FILE, TICKET_FILE, write_json_atomic
from elth.flops import forward_macs, training_flops
from elth.models import build_model
from elth.runs import run_dir
from elth.tickets import Ticket, load_ticket, save_ticket


@dataclass(frozen=True)
class Context:
    """What every run of one experiment shares (picklable, sent to worker processes)."""

    root: str
    dataset: str
    data_dir: str | None = None
    device: str | None = None
    preset: str | None = None
    protocol: tuple[tuple[str, object], ...] = ()
    rewind: str | None = None
    prune_fraction: float = 0.2
    progress: bool = True


@dataclass(frozen=True)
class LevelCost:
    """One IMP level of one run: its ticket, its trained accuracy and what it cost."""

    level: int
    sparsity: float
    accuracy: float
    ticket: str
    rewind_step: int
    train_steps: int
    train_flops: float
    #: dense training to the rewind point plus every earlier round: the cost of finding this mask
    mask_cost_flops: float


@dataclass(frozen=True)
class ImpOutcome:
    model: str
    seed: int
    run: str  # the IMP run directory's name
    levels: tuple[LevelCost, ...]


@dataclass(frozen=True)
class TicketOutcome:
    sparsity: float
    accuracy: float
    train_steps: int
    train_flops: float
    mask_cost_flops: float
    ticket: str
    seconds: float


# -- shared plumbing --------------------------------------------------------------------------
_DATA: dict[tuple, object] = {}


def dataset(ctx: Context):
    """The experiment's dataset, loaded once per process."""
    from elth.data import load_dataset

    key = (ctx.dataset, ctx.data_dir, ctx.device)
    if key not in _DATA:
        _DATA[key] = load_dataset(ctx.dataset, ctx.data_dir, device=ctx.device or "cpu")
    return _DATA[key]


def protocol_for(ctx: Context, model: str):
    from elth.training import preset

    base = preset(ctx.preset or "paper", ctx.dataset, model)
    return base.replace(**dict(ctx.protocol)) if ctx.protocol else base


def rewind_for(ctx: Context, model: str) -> str:
    from elth.training import default_rewind

    return ctx.rewind if ctx.rewind is not None else default_rewind(model, ctx.dataset)


def imp_config(ctx: Context, model: str, seed: int):
    from elth.workflows.imp import IMPConfig

    data = dataset(ctx)
    return IMPConfig(
        model=model, dataset=data.info.name, protocol=protocol_for(ctx, model), rewind=rewind_for(ctx, model),
        prune_fraction=ctx.prune_fraction, seed=seed, data_seed=seed,
    )


def _macs(model_name: str, info, mask=None) -> int:
    """Forward multiply-adds per example (shapes only: the model lives on the meta device)."""
    with torch.device("meta"):
        model = build_model(model_name, info.input_shape, info.num_classes, seed=None)
    return forward_macs(model, mask)


def _relative(path: str | os.PathLike, root: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


# -- IMP --------------------------------------------------------------------------------------
def imp_cached(ctx: Context, run: ImpRun) -> bool:
    """Whether the IMP run already has every level trained (no work left)."""
    from elth.workflows.imp import imp_run_dir, read_summary

    data = dataset(ctx)
    directory = imp_run_dir(imp_config(ctx, run.model, run.seed), data, ctx.root)
    return len(read_summary(directory)) > run.levels


def run_imp_job(ctx: Context, run: ImpRun) -> ImpOutcome:
    """Run (or read back) IMP to `run.levels` and price every level."""
    from elth.workflows.imp import imp_run_dir, run_imp

    data = dataset(ctx)
    config = imp_config(ctx, run.model, run.seed)
    results = run_imp(config, data, run.levels, ctx.root, device=ctx.device, progress=ctx.progress)
    batch = config.protocol.batch_size
    dense_macs = _macs(run.model, data.info)
    rewind_step = results[0].rewind_step
    spent = training_flops(dense_macs, rewind_step, batch)
    levels = []
    for r in results:
        mask = load_ticket(r.ticket_path).mask
        flops = training_flops(_macs(run.model, data.info, mask), r.train_steps, batch)
        levels.append(LevelCost(
            r.level, r.sparsity, r.test_accuracy, str(r.ticket_path), r.rewind_step, r.train_steps, flops, spent,
        ))
        spent += flops
    return ImpOutcome(run.model, run.seed, imp_run_dir(config, data, ctx.root).name, tuple(levels))


def run_imp_group_job(ctx: Context, runs: list[ImpRun], group_size: int) -> int:
    """Advance the IMP runs `runs` (one network, different seeds) level by level, each level's
    trainings fused; `run_imp_job` then reads them back. The number of runs."""
    from elth.workflows.imp_groups import run_imp_together

    configs = [imp_config(ctx, run.model, run.seed) for run in runs]
    run_imp_together(configs, dataset(ctx), [run.levels for run in runs], ctx.root, group_size=group_size,
                     device=ctx.device, progress=ctx.progress)
    return len(runs)


# -- tickets (ETTs and baselines) ---------------------------------------------------------------
#: forward+backward passes over the scoring examples each scoring method makes (an estimate:
#: SNIP one gradient; GraSP a gradient then a Hessian-gradient product by double back-propagation)
SCORING_PASSES = {"magnitude": 0, "snip": 1, "grasp": 3, "snip-extra": 1}


def ticket_run_dir(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> Path:
    """`root/ticket-<hash>`: the hash covers the run, the ticket(s) it starts from and the protocol."""
    data = dataset(ctx)
    hp = {
        **run.hparams(),
        "from_ticket": _relative(basis.ticket, ctx.root),
        "like_ticket": _relative(like.ticket, ctx.root),
        "dataset": data.info.to_dict(),
        "protocol": protocol_for(ctx, run.target).to_dict(),
        "rewind": rewind_for(ctx, run.target),
    }
    return run_dir(ctx.root, "ticket", hp)


def ticket_cached(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> TicketOutcome | None:
    f = ticket_run_dir(ctx, run, basis, like) / RESULT_FILE
    if f.is_file():
        return TicketOutcome(**json.loads(f.read_text()))
    return None


def run_ticket_job(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> TicketOutcome:
    """Make the run's ticket (or read it back), train it (or resume), and price it.

    `basis` is the IMP level the ticket comes from (the source's for ETTs and snip-extra, the
    target's otherwise); `like` is the target's own IMP ticket at that level, whose sparsity the
    baselines match.
    """
    from elth.workflows.ticket_training import train_ticket

    directory = ticket_run_dir(ctx, run, basis, like)
    result_file = directory / RESULT_FILE
    if result_file.is_file():
        return TicketOutcome(**json.loads(result_file.read_text()))
    if run.method in DST_BASELINES:
        outcome = _dst_outcome(ctx, run, like)
        write_json_atomic(result_file, asdict(outcome))
        return outcome
    start = time.time()
    data = dataset(ctx)
    protocol = protocol_for(ctx, run.target)
    ticket_path = Path(prepare_ticket_job(ctx, run, basis, like))
    ticket = load_ticket(ticket_path)
    res = train_ticket(ticket, data, protocol, data_seed=run.seed, root=ctx.root, device=ctx.device,
                       progress=ctx.progress)
    steps = int(res.step) - ticket.rewind_step
    flops = training_flops(_macs(run.target, data.info, ticket.mask), steps, protocol.batch_size)
    outcome = TicketOutcome(
        sparsity=ticket.sparsity, accuracy=float(res.test_accuracy), train_steps=steps, train_flops=flops,
        mask_cost_flops=mask_cost(ctx, run, basis, like), ticket=str(ticket_path),
        seconds=time.time() - start,
    )
    write_json_atomic(result_file, asdict(outcome))
    return outcome


def prepare_ticket_job(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> str:
    """Make the run's ticket and keep it in its run directory (once); its path."""
    ticket_path = ticket_run_dir(ctx, run, basis, like) / TICKET_FILE
    if not ticket_path.is_file():
        save_ticket(make_ticket(ctx, run, basis, like), ticket_path)
    return str(ticket_path)


def train_ticket_group_job(ctx: Context, target: str, items: list[tuple[str, int]], group_size: int) -> int:
    """Train the saved tickets `items` ((ticket path, data seed); one target, protocol and rewind
    step) in fused groups of `group_size`, where `train_ticket` would train them alone, so the
    runs' jobs find them trained. The number of trainings."""
    from elth.workflows.ticket_groups import train_tickets

    tickets = [(load_ticket(path), seed) for path, seed in items]
    train_tickets(tickets, dataset(ctx), protocol_for(ctx, target), group_size=group_size, root=ctx.root,
                  device=ctx.device, progress=ctx.progress)
    return len(tickets)


def _dst_outcome(ctx: Context, run: TicketRun, like: LevelCost) -> TicketOutcome:
    """RigL or DPF from scratch on the target, to the sparsity of the target's IMP ticket `like`."""
    from elth.workflows.dst_training import train_dst

    start = time.time()
    method, multiplier = ("rigl", 5) if run.method == "rigl-5x" else (run.method, 1)
    res = train_dst(run.target, dataset(ctx), protocol_for(ctx, run.target), method, like.sparsity, seed=run.seed,
                    data_seed=run.seed, root=ctx.root, device=ctx.device, progress=ctx.progress,
                    multiplier=multiplier)
    return TicketOutcome(
        sparsity=res.sparsity, accuracy=res.test_accuracy, train_steps=res.train_steps,
        train_flops=res.training_flops, mask_cost_flops=0.0, ticket=str(res.ticket_path),
        seconds=time.time() - start,
    )


def make_ticket(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> Ticket:
    if run.method == "ett":
        return _transformed(ctx, run, basis)
    if run.method in ("ett-reinit", "ett-random", "ett-random-reinit"):
        return _ett_variant(ctx, run, basis)
    return make_baseline(ctx, run, basis, like)


def _transformed(ctx: Context, run: TicketRun, basis: LevelCost) -> Ticket:
    """The source's IMP ticket at the run's level, stretched or squeezed as the run says, and moved
    to the experiment's dataset when it was found on another."""
    from elth.elastic import transform
    from elth.transfer import to_dataset

    ticket = load_ticket(basis.ticket)
    if run.target != run.source:
        ticket = transform(
            ticket, run.target, order=run.order, squeeze_mode=run.squeeze_mode, units=run.units, drop=run.drop,
            random_replicas=run.random_replicas, seed=run.seed, source_path=basis.ticket,
        )
    if run.source_dataset:
        ticket = to_dataset(ticket, dataset(ctx).info, seed=run.seed)
    return ticket


def _ett_variant(ctx: Context, run: TicketRun, basis: LevelCost) -> Ticket:
    """Figure 3's controls: the ETT ticket with fresh weights, with shuffled masks, or both."""
    from elth.workflows.baseline_tickets import permute_ticket_mask, prune_ticket

    ett = _transformed(ctx, run, basis)
    if run.method in ("ett-random", "ett-random-reinit"):
        ett = permute_ticket_mask(ett, seed=run.seed)
    if run.method == "ett-random":
        return ett
    result = prune_ticket(
        "reinit", run.target, dataset(ctx), protocol_for(ctx, run.target), rewind=rewind_for(ctx, run.target),
        like=ett, seed=run.seed, data_seed=run.seed, root=ctx.root, device=ctx.device, progress=ctx.progress,
    )
    return result.ticket


def make_baseline(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> Ticket:
    """A pruning baseline for the target, sparsity-matched to the target's IMP ticket `like`.

    snip-extra instead starts from the source's IMP ticket `basis` (which it stretches).
    """
    from elth.workflows.baseline_tickets import prune_ticket

    reference = basis if run.method == "snip-extra" else like
    result = prune_ticket(
        run.method, run.target, dataset(ctx), protocol_for(ctx, run.target), rewind=rewind_for(ctx, run.target),
        like=load_ticket(reference.ticket), like_path=reference.ticket, seed=run.seed, data_seed=run.seed,
        root=ctx.root, device=ctx.device, progress=ctx.progress,
    )
    return result.ticket


def mask_cost(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> float:
    """FLOPs spent finding the ticket's mask (see the results table's documentation)."""
    if run.method in ("ett", "ett-reinit", "ett-random", "ett-random-reinit"):
        return basis.mask_cost_flops
    if run.method in ("random", "reinit"):
        # Their masks come from the target's IMP ticket (its layerwise sparsities, or the mask itself).
        return like.mask_cost_flops
    data = dataset(ctx)
    protocol = protocol_for(ctx, run.target)
    dense = _macs(run.target, data.info)
    rewind_cost = training_flops(dense, like.rewind_step, protocol.batch_size)
    examples = 10 * data.info.num_classes
    if run.method == "synflow":
        # 100 rounds of one forward and backward pass on a single all-ones input.
        scoring = training_flops(dense, 100, 1)
    else:
        scoring = training_flops(dense, SCORING_PASSES.get(run.method, 1), examples)
    if run.method == "snip-extra":
        return basis.mask_cost_flops + scoring
    return rewind_cost + scoring


# -- linear mode connectivity (Figure 8) ---------------------------------------------------------
#: The second copy of a ticket trains with data seed `seed + LMC_SEED_OFFSET`; the first with `seed`,
#: the same training the ticket's own accuracy comes from (shared through the store).
LMC_SEED_OFFSET = 1000


def lmc_run_dir(ctx: Context, run: LMCRun, ticket_path: str) -> Path:
    data = dataset(ctx)
    hp = {
        "ticket": _relative(ticket_path, ctx.root), "target": run.target, "level": run.level, "seed": run.seed,
        "points": run.points, "dataset": data.info.to_dict(), "protocol": protocol_for(ctx, run.target).to_dict(),
        "data_seeds": [run.seed, run.seed + LMC_SEED_OFFSET],
    }
    return run_dir(ctx.root, "lmc", hp)


def lmc_cached(ctx: Context, run: LMCRun, ticket_path: str) -> dict | None:
    f = lmc_run_dir(ctx, run, ticket_path) / LMC_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def run_lmc_job(ctx: Context, run: LMCRun, ticket_path: str, label: str) -> dict:
    """Two copies of the ticket trained with different data seeds and the path between them (cached)."""
    from elth.analysis import linear_mode_connectivity

    cached = lmc_cached(ctx, run, ticket_path)
    if cached is not None:
        return cached
    result = linear_mode_connectivity(
        load_ticket(ticket_path), dataset(ctx), protocol_for(ctx, run.target),
        data_seeds=(run.seed, run.seed + LMC_SEED_OFFSET), points=run.points, label=label,
        ticket_path=ticket_path, root=ctx.root, device=ctx.device, progress=ctx.progress,
    )
    out = result.to_dict()
    write_json_atomic(lmc_run_dir(ctx, run, ticket_path) / LMC_FILE, out)
    return out
