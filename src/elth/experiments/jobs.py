"""The work of one run, importable by worker processes: IMP on one network, or one ticket made and trained.

Every run is cached under the store root: IMP in `imp-<hash>/` (see `elth.workflows.imp`), each
other ticket in `ticket-<hash>/` holding the ticket (`ticket.safetensors`) and, once trained, its
`result.json`. The hash covers everything that determines the result, so a finished run is read
back instead of trained again and an interrupted one resumes from its checkpoints.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch

from elth.analysis import linear_mode_connectivity
from elth.data import Dataset, DatasetInfo, load_dataset
from elth.dataset_move import to_dataset
from elth.elastic import match_sparsity, source_sparsity, transform
from elth.elastic.width import SQUEEZE_CRITERIA as WIDTH_SQUEEZE_CRITERIA
from elth.elastic.width import transform_width
from elth.experiments.compute import mask_cost_flops
from elth.experiments.spec import ImpRun, LMCRun, TicketRun, is_width_change
from elth.files import (
    LMC_FILE,
    RESULT_FILE,
    TICKET_FILE,
    json_object,
    read_record,
    write_json_atomic,
)
from elth.flops import forward_macs, training_flops
from elth.methods import method
from elth.models import build_model
from elth.runs import RunKey
from elth.tickets import Ticket, load_ticket, save_ticket
from elth.training import Protocol, TrainingDiverged, default_rewind, preset
from elth.workflows.baseline_tickets import permute_ticket_mask, prune_ticket
from elth.workflows.dst_training import train_dst, train_dst_group
from elth.workflows.imp import IMPConfig, imp_run_dir, level_dir, run_imp, run_imps
from elth.workflows.ticket_training import train_ticket, train_tickets

#: result.json status of a ticket run whose training diverged and was kept (`Context.keep_diverged`)
DIVERGED = "diverged"


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
    #: a ticket run whose training diverges is recorded as diverged (`Diverged`) instead of failing
    keep_diverged: bool = False


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


@dataclass(frozen=True)
class Diverged:
    """A ticket run whose training diverged, kept in the sweep (`Context.keep_diverged`): no accuracy."""

    step: int
    error: str
    ticket: str


# -- what a context means for one model, worked out once per process --------------------------
_DATA: dict[tuple, object] = {}
_SETTINGS: dict[tuple["Context", str], "ModelSettings"] = {}


def dataset(ctx: Context):
    """The experiment's dataset, loaded once per process."""
    key = (ctx.dataset, ctx.data_dir, ctx.device)
    if key not in _DATA:
        _DATA[key] = load_dataset(ctx.dataset, ctx.data_dir, device=ctx.device or "cpu")
    return _DATA[key]


def dataset_name(ctx: Context) -> str:
    return dataset(ctx).info.name


def on_dataset(ctx: Context, name: str) -> Context:
    """The context of `ctx`'s experiment on another dataset ("": `ctx` itself)."""
    return dataclasses.replace(ctx, dataset=name) if name else ctx


def on_cpu(ctx: Context) -> Context:
    return dataclasses.replace(ctx, device="cpu")


@dataclass(frozen=True)
class ModelSettings:
    """How the runs of one context train one model: its data, protocol and rewind point."""

    model: str
    data: Dataset
    protocol: Protocol
    rewind: str

    @property
    def info(self) -> DatasetInfo:
        return self.data.info

    def macs(self, mask=None) -> int:
        """Forward multiply-adds per example (shapes only: the model lives on the meta device)."""
        with torch.device("meta"):
            model = build_model(self.model, self.info.input_shape, self.info.num_classes, seed=None)
        return forward_macs(model, mask)

    def training_flops(self, steps: int, mask=None) -> float:
        return training_flops(self.macs(mask), steps, self.protocol.batch_size)


def settings(ctx: Context, model: str) -> ModelSettings:
    """`model`'s settings in `ctx` (the preset and overrides, the rewind point), resolved once."""
    key = (ctx, model)
    if key not in _SETTINGS:
        base = preset(ctx.preset or "paper", ctx.dataset, model)
        protocol = base.replace(**dict(ctx.protocol)) if ctx.protocol else base
        rewind = ctx.rewind if ctx.rewind is not None else default_rewind(model, ctx.dataset)
        _SETTINGS[key] = ModelSettings(model, dataset(ctx), protocol, rewind)
    return _SETTINGS[key]


def imp_config(ctx: Context, model: str, seed: int) -> IMPConfig:
    s = settings(ctx, model)
    return IMPConfig(
        model=model, dataset=s.info.name, protocol=s.protocol, rewind=s.rewind,
        prune_fraction=ctx.prune_fraction, seed=seed, data_seed=seed,
    )


def _relative(path: str | os.PathLike, root: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


# -- IMP --------------------------------------------------------------------------------------
def imp_finished(directory: Path, run: ImpRun) -> bool:
    """Whether the IMP run in `directory` has every level trained (no work left): each level's own
    result record, not the summary, which outlives a record deleted to have its level trained again."""
    return all((level_dir(directory, k) / RESULT_FILE).is_file() for k in range(run.levels + 1))


def imp_directory(ctx: Context, run: ImpRun) -> Path:
    """The IMP run's directory in the store (named, not created: looking creates nothing)."""
    return imp_run_dir(imp_config(ctx, run.model, run.seed), dataset(ctx), ctx.root, create=False)


def imp_outcome(ctx: Context, run: ImpRun) -> ImpOutcome | None:
    """The finished IMP run read back from the store (None while some level is missing)."""
    directory = imp_directory(ctx, run)
    if not imp_finished(directory, run):
        return None
    levels = imp_levels(ctx, run, directory)[: run.levels + 1]
    return ImpOutcome(run.model, run.seed, directory.name, tuple(levels))


def run_imp_job(ctx: Context, run: ImpRun) -> ImpOutcome:
    """Run (or read back) IMP to `run.levels` and price every level."""
    run_imp(imp_config(ctx, run.model, run.seed), dataset(ctx), run.levels, ctx.root, device=ctx.device,
            progress=ctx.progress)
    outcome = imp_outcome(ctx, run)
    assert outcome is not None, "run_imp returned before every level was trained"
    return outcome


#: (ticket path, modification time) -> (sparsity, rewind step, forward MACs of the masked model):
#: tickets never change once written, so an IMP run followed level by level is read once per level.
_TICKET_FACTS: dict[tuple[str, float], tuple[float, int, int]] = {}


def _ticket_facts(s: ModelSettings, path: Path) -> tuple[float, int, int]:
    key = (str(path), path.stat().st_mtime)
    if key not in _TICKET_FACTS:
        ticket = load_ticket(path)
        _TICKET_FACTS[key] = (ticket.sparsity, ticket.rewind_step, s.macs(ticket.mask))
    return _TICKET_FACTS[key]


def imp_levels(ctx: Context, run: ImpRun, directory: Path | None = None) -> list[LevelCost]:
    """The levels of an IMP run whose tickets are in the store, priced, even while the run goes on.

    A level's ticket exists once every earlier level is trained, so its mask cost is known; a level
    not trained yet has accuracy NaN and no training steps. The ticket runs of the experiment's
    graph start from these as soon as the level they need appears. `directory`: the run's (when known).
    """
    s = settings(ctx, run.model)
    directory = imp_directory(ctx, run) if directory is None else directory
    levels: list[LevelCost] = []
    spent = 0.0
    k = 0
    while True:
        ticket_path = level_dir(directory, k) / TICKET_FILE
        if not ticket_path.is_file():
            return levels
        sparsity, rewind_step, macs = _ticket_facts(s, ticket_path)
        if k == 0:
            spent = s.training_flops(rewind_step)
        result_path = level_dir(directory, k) / RESULT_FILE
        result = read_record(result_path, _level_facts)
        steps = result["end_step"] - result["rewind_step"] if result else 0
        flops = training_flops(macs, steps, s.protocol.batch_size) if result else 0.0
        levels.append(LevelCost(
            k, result["sparsity"] if result else sparsity, result["test_accuracy"] if result else float("nan"),
            str(ticket_path), rewind_step, steps, flops, spent,
        ))
        if result is None:
            return levels
        spent += flops
        k += 1


def run_imp_group_job(ctx: Context, runs: list[ImpRun], group_size: int) -> int:
    """Advance the IMP runs `runs` (one network, different seeds) level by level, each level's
    trainings fused; `run_imp_job` then reads them back. The number of runs."""
    configs = [imp_config(ctx, run.model, run.seed) for run in runs]
    run_imps(configs, dataset(ctx), [run.levels for run in runs], ctx.root, group_size=group_size,
             device=ctx.device, progress=ctx.progress)
    return len(runs)


# -- tickets (ETTs and baselines) ---------------------------------------------------------------
@dataclass(frozen=True)
class TicketRunKey(RunKey):
    """What determines a ticket run of an experiment (`root/ticket-<hash>`): the run (its method,
    networks, level, seed and strategy: `TicketRun.hparams`, recorded at the top level), the
    tickets it starts from and the protocol."""

    prefix: ClassVar[str] = "ticket"
    run: dict
    from_ticket: str
    like_ticket: str
    dataset: dict
    protocol: dict
    rewind: str

    def hparams(self) -> dict:
        fields = super().hparams()
        return {**fields.pop("run"), **fields}


@dataclass(frozen=True)
class LMCRunKey(RunKey):
    """What determines an LMC run of an experiment (`root/lmc-<hash>`)."""

    prefix: ClassVar[str] = "lmc"
    ticket: str
    target: str
    level: int
    seed: int
    points: int
    dataset: dict
    protocol: dict
    data_seeds: list


def ticket_run_dir(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> Path:
    """`root/ticket-<hash>`: the hash covers the run, the ticket(s) it starts from and the protocol."""
    s = settings(ctx, run.target)
    return TicketRunKey(run.hparams(), _relative(basis.ticket, ctx.root), _relative(like.ticket, ctx.root),
                        s.info.to_dict(), s.protocol.to_dict(), s.rewind).directory(ctx.root)


def _level_facts(record: dict) -> dict:
    """An IMP level's result record, with what the experiment reads from it."""
    for key in ("end_step", "rewind_step", "sparsity", "test_accuracy"):
        record[key]  # a missing one is a damaged record (`read_record`)
    return record


def ticket_cached(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> TicketOutcome | Diverged | None:
    return _recorded(ctx, ticket_run_dir(ctx, run, basis, like) / RESULT_FILE)


def _recorded(ctx: Context, result_file: Path) -> TicketOutcome | Diverged | None:
    """The outcome a ticket run recorded; a recorded divergence counts only when diverged runs are kept
    (otherwise the run is tried again, and fails)."""
    def outcome(record: dict) -> TicketOutcome | Diverged | None:
        if record.get("status") == DIVERGED:
            return Diverged(record["step"], record["error"], record["ticket"]) if ctx.keep_diverged else None
        return TicketOutcome(**record)

    return read_record(result_file, outcome)


def run_ticket_job(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> TicketOutcome | Diverged:
    """Make the run's ticket (or read it back), train it (or resume), and price it.

    `basis` is the IMP level the ticket comes from (the source's for ETTs and snip-extra, the
    target's otherwise); `like` is the target's own IMP ticket at that level, whose sparsity the
    baselines match. With `ctx.keep_diverged`, a training that diverges is recorded in result.json
    with status "diverged" and returned as `Diverged`; otherwise `TrainingDiverged` propagates.
    """
    directory = ticket_run_dir(ctx, run, basis, like)
    result_file = directory / RESULT_FILE
    recorded = _recorded(ctx, result_file)
    if recorded is not None:
        return recorded
    try:
        outcome = _train_ticket_run(ctx, run, basis, like, directory)
    except TrainingDiverged as e:
        if not ctx.keep_diverged:
            raise
        kept = Diverged(e.step, str(e), str(directory / TICKET_FILE))
        write_json_atomic(result_file, {**e.record(), "status": DIVERGED, **asdict(kept)})
        return kept
    write_json_atomic(result_file, asdict(outcome))
    return outcome


def prepare_ticket_job(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost) -> str:
    """Make the run's ticket and keep it in its run directory (once); its path."""
    ticket_path = ticket_run_dir(ctx, run, basis, like) / TICKET_FILE
    if not ticket_path.is_file():
        save_ticket(make_ticket(ctx, settings(ctx, run.target), run, basis, like), ticket_path)
    return str(ticket_path)


def train_ticket_group_job(ctx: Context, target: str, items: list[tuple[str, int]], group_size: int) -> int:
    """Train the saved tickets `items` ((ticket path, data seed); one target, protocol and rewind
    step) in fused groups of `group_size`, where `train_ticket` would train them alone, so the
    runs' jobs find them trained. The number of trainings."""
    s = settings(ctx, target)
    tickets = [(load_ticket(path), seed) for path, seed in items]
    train_tickets(tickets, s.data, s.protocol, group_size=group_size, root=ctx.root, device=ctx.device,
                  progress=ctx.progress)
    return len(tickets)


def train_dst_group_job(ctx: Context, runs: list[tuple[TicketRun, LevelCost]], group_size: int) -> int:
    """Train the DST runs `runs` ((run, the target's IMP level whose sparsity it matches); one
    target and method) in fused groups of `group_size`, where `_dst_outcome` would train them
    alone, so the runs' jobs find them trained. The number of trainings."""
    first = runs[0][0]
    s = settings(ctx, first.target)
    algorithm, multiplier = method(first.method).dst
    train_dst_group(first.target, s.data, s.protocol, algorithm, [(like.sparsity, run.seed, run.seed) for run, like in runs],
                    group_size=group_size, root=ctx.root, device=ctx.device, progress=ctx.progress,
                    multiplier=multiplier)
    return len(runs)


def _train_ticket_run(ctx: Context, run: TicketRun, basis: LevelCost, like: LevelCost, directory: Path) -> TicketOutcome:
    s = settings(ctx, run.target)
    if method(run.method).dst is not None:
        return _dst_outcome(ctx, s, run, like)
    ticket_path = directory / TICKET_FILE
    if ticket_path.is_file():
        ticket = load_ticket(ticket_path)
    else:
        ticket = make_ticket(ctx, s, run, basis, like)
        save_ticket(ticket, ticket_path)
    res = train_ticket(ticket, s.data, s.protocol, data_seed=run.seed, root=ctx.root, device=ctx.device,
                       progress=ctx.progress)
    steps = int(res.step) - ticket.rewind_step
    return TicketOutcome(
        sparsity=ticket.sparsity, accuracy=float(res.test_accuracy), train_steps=steps,
        train_flops=s.training_flops(steps, ticket.mask),
        mask_cost_flops=ticket_mask_cost(s, run, ticket, basis, like),
        ticket=str(ticket_path), seconds=float(res.seconds),  # the training's own time (in a fused group: the group's)
    )


def _dst_outcome(ctx: Context, s: ModelSettings, run: TicketRun, like: LevelCost) -> TicketOutcome:
    """RigL or DPF from scratch on the target, to the sparsity of the target's IMP ticket `like`."""
    algorithm, multiplier = method(run.method).dst
    res = train_dst(run.target, s.data, s.protocol, algorithm, like.sparsity, seed=run.seed, data_seed=run.seed,
                    root=ctx.root, device=ctx.device, progress=ctx.progress, multiplier=multiplier)
    return TicketOutcome(
        sparsity=res.sparsity, accuracy=res.test_accuracy, train_steps=res.train_steps,
        train_flops=res.training_flops, mask_cost_flops=0.0, ticket=str(res.ticket_path),
        seconds=float(res.seconds),  # the training's own time (in a fused group: the group's)
    )


def make_ticket(ctx: Context, s: ModelSettings, run: TicketRun, basis: LevelCost, like: LevelCost) -> Ticket:
    """The run's ticket, made as its method's kind makes tickets (`_MAKERS`; the pruning baselines otherwise)."""
    return _MAKERS.get(method(run.method).kind, make_baseline)(ctx, s, run, basis, like)


def _transformed(ctx: Context, s: ModelSettings, run: TicketRun, basis: LevelCost, like: LevelCost | None = None) -> Ticket:
    """The source's IMP ticket at the run's level, stretched or squeezed as the run says, and moved
    to the experiment's dataset when it was found on another."""
    ticket = load_ticket(basis.ticket)
    if run.target != run.source and is_width_change(run.source, run.target):
        ticket = transform_width(ticket, run.target, criterion=run.width_squeeze or WIDTH_SQUEEZE_CRITERIA[0],
                                 rescale=run.rescale, permute_replicas=run.random_replicas, seed=run.seed)
    elif run.target != run.source:
        ticket = transform(
            ticket, run.target, order=run.order, squeeze_mode=run.squeeze_mode, units=run.units, drop=run.drop,
            random_replicas=run.random_replicas, seed=run.seed, source_path=basis.ticket,
        )
        if run.match_sparsity:
            ticket = match_sparsity(ticket, source_sparsity(ticket))
    if run.source_dataset:
        ticket = to_dataset(ticket, s.info, seed=run.seed)
    return ticket


def _ett_variant(ctx: Context, s: ModelSettings, run: TicketRun, basis: LevelCost, like: LevelCost) -> Ticket:
    """Figure 3's controls: the ETT ticket with fresh weights, with shuffled masks, or both."""
    ett = _transformed(ctx, s, run, basis)
    if run.method in ("ett-random", "ett-random-reinit"):
        ett = permute_ticket_mask(ett, seed=run.seed)
    if run.method == "ett-random":
        return ett
    result = prune_ticket(
        "reinit", run.target, s.data, s.protocol, rewind=s.rewind, like=ett, seed=run.seed, data_seed=run.seed,
        root=ctx.root, device=ctx.device, progress=ctx.progress,
    )
    return result.ticket


def make_baseline(ctx: Context, s: ModelSettings, run: TicketRun, basis: LevelCost, like: LevelCost) -> Ticket:
    """A pruning baseline for the target, sparsity-matched to the target's IMP ticket `like`.

    snip-extra instead starts from the source's IMP ticket `basis` (which it stretches).
    """
    reference = basis if method(run.method).from_transfer else like
    result = prune_ticket(
        run.method, run.target, s.data, s.protocol, rewind=s.rewind, like=load_ticket(reference.ticket),
        like_path=reference.ticket, seed=run.seed, data_seed=run.seed, root=ctx.root, device=ctx.device,
        progress=ctx.progress,
    )
    return result.ticket


#: How the tickets of a method kind are made (a kind not here: `make_baseline`).
_MAKERS = {"ett": _transformed, "ett-control": _ett_variant}


def ticket_mask_cost(s: ModelSettings, run: TicketRun, ticket: Ticket, basis: LevelCost, like: LevelCost) -> float:
    """FLOPs spent finding the ticket's mask, priced by its method with the scoring settings it recorded."""
    provenance = ticket.provenance or {}
    return mask_cost_flops(
        run.method, dense_macs=s.macs(), rewind_step=like.rewind_step, batch_size=s.protocol.batch_size,
        source_cost=basis.mask_cost_flops, like_cost=like.mask_cost_flops,
        score_examples=int(provenance.get("score_examples") or 0),
        synflow_rounds=int((provenance.get("options") or {}).get("synflow_rounds") or 0),
    )


# -- linear mode connectivity (Figure 8) ---------------------------------------------------------
#: The second copy of a ticket trains with data seed `seed + LMC_SEED_OFFSET`; the first with `seed`,
#: the same training the ticket's own accuracy comes from (shared through the store).
LMC_SEED_OFFSET = 1000


def lmc_run_dir(ctx: Context, run: LMCRun, ticket_path: str) -> Path:
    s = settings(ctx, run.target)
    return LMCRunKey(_relative(ticket_path, ctx.root), run.target, run.level, run.seed, run.points, s.info.to_dict(),
                     s.protocol.to_dict(), [run.seed, run.seed + LMC_SEED_OFFSET]).directory(ctx.root)


def lmc_cached(ctx: Context, run: LMCRun, ticket_path: str) -> dict | None:
    f = lmc_run_dir(ctx, run, ticket_path) / LMC_FILE
    return read_record(f, json_object)


def run_lmc_job(ctx: Context, run: LMCRun, ticket_path: str, label: str) -> dict:
    """Two copies of the ticket trained with different data seeds and the path between them (cached)."""
    cached = lmc_cached(ctx, run, ticket_path)
    if cached is not None:
        return cached
    s = settings(ctx, run.target)
    result = linear_mode_connectivity(
        load_ticket(ticket_path), s.data, s.protocol,
        data_seeds=(run.seed, run.seed + LMC_SEED_OFFSET), points=run.points, label=label,
        ticket_path=ticket_path, root=ctx.root, device=ctx.device, progress=ctx.progress,
    )
    out = result.to_dict()
    write_json_atomic(lmc_run_dir(ctx, run, ticket_path) / LMC_FILE, out)
    return out
