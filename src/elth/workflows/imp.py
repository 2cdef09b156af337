"""Iterative Magnitude Pruning with rewinding.

Level 0 trains the dense network from the rewind point to the end of the protocol. Each later level
k keeps the weights of level k-1 with the largest trained magnitudes (removing ceil(fraction x
remaining), globally over the eligible layers), resets the survivors to their rewind values and
trains again from the rewind step with that mask fixed.

Layout of `root/imp-<hash>/` (the hash covers everything but the number of levels, so a larger
`levels` extends a run):

    hparams.json
    level_<k>/ticket.safetensors   rewind weights masked + mask; provenance "IMP level k of run ..."
    level_<k>/train/               the level's training (checkpoints; resumable)
    level_<k>/result.json          the level's test accuracy, loss and steps, once trained
    levels.json                    every finished level's result, in order (ticket paths relative
                                   to the run directory)

Each file is written atomically and only after the work it records, so a run killed at any moment
resumes from its last checkpoint and produces the same masks and weights as an uninterrupted one.

`run_imps` advances several IMP runs level by level together, each level's trainings fused in groups
(runs of one model, protocol, rewind step and precision: different seeds or prune settings); every
file lands where a lone run puts it, and `run_imp` is a group of one.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch

from elth.errors import ElthError
from elth.files import (
    CHECKPOINT_FILE,
    IMP_LEVELS_FILE,
    RESULT_FILE,
    TICKET_FILE,
    TRAIN_DIR,
    read_record,
    write_json_atomic,
)
from elth.limits import BadNumberError, check_real, check_seed
from elth.masks import (
    count,
    excluded_names,
    full_mask,
    imp_kept_counts,
    magnitude_prune,
)
from elth.models import build_model
from elth.runs import RunKey
from elth.tickets import (
    ModelLayout,
    Ticket,
    TicketError,
    from_model,
    load_ticket,
    model_layout,
    save_ticket,
)
from elth.training import Member, Protocol, TrainingDiverged, distributed, train_group
from elth.training.checkpoint import load_checkpoint
from elth.workflows.rewind import rewind_point, rewind_step_of


class IMPError(ElthError, ValueError):
    """IMP settings that cannot work."""


@dataclass(frozen=True)
class IMPConfig:
    """Everything that determines an IMP run except how many levels it goes to.

    `exclude=None` keeps the model's default dense layers (the output layer of VGGs and MLPs);
    a tuple replaces them (an empty tuple prunes every conv/linear weight).
    """

    model: str
    dataset: str
    protocol: Protocol
    rewind: str
    prune_fraction: float = 0.2
    exclude: tuple[str, ...] | None = None
    seed: int = 0
    data_seed: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, Protocol):
            raise IMPError(f"protocol must be a Protocol, got {type(self.protocol).__name__}")
        try:
            check_real(self.prune_fraction, "the prune fraction", low=0, high=1, low_open=True, high_open=True)
            check_seed(self.seed, "seed")
            check_seed(self.data_seed, "data seed")
        except BadNumberError as e:
            raise IMPError(str(e)) from None


@dataclass(frozen=True)
class LevelResult:
    level: int
    sparsity: float
    kept: int
    prunable: int
    test_accuracy: float
    test_loss: float
    train_loss: float
    rewind_step: int
    end_step: int
    train_steps: int
    seconds: float
    ticket_path: Path = field(compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ticket_path"] = str(self.ticket_path)
        return d


def resolved_exclusions(config: IMPConfig, info) -> list[str]:
    """The excluded layers by name (defaults resolved), so equivalent configs hash alike."""
    return excluded_names(_layout(config, info), None if config.exclude is None else list(config.exclude))


def _layout(config: IMPConfig, info) -> ModelLayout:
    return model_layout(config.model, tuple(info.input_shape), info.num_classes)


@dataclass(frozen=True)
class ImpKey(RunKey):
    """What determines an IMP run (`root/imp-<hash>`): everything but the number of levels."""

    prefix: ClassVar[str] = "imp"
    model: str
    dataset: dict
    protocol: dict
    rewind_step: int
    prune_fraction: float
    excluded: list
    seed: int
    data_seed: int
    precision: str


def imp_key(config: IMPConfig, data) -> ImpKey:
    return ImpKey(
        model=config.model, dataset=data.info.to_dict(), protocol=config.protocol.to_dict(),
        rewind_step=rewind_step_of(config.rewind, data, config.protocol), prune_fraction=config.prune_fraction,
        excluded=resolved_exclusions(config, data.info), seed=config.seed, data_seed=config.data_seed,
        precision=config.precision,
    )


def imp_run_dir(config: IMPConfig, data, root: str | os.PathLike, create: bool = True) -> Path:
    """`root/imp-<hash>`: where `run_imp(config, data, ..., root)` keeps its levels (created unless
    `create` is False)."""
    return imp_key(config, data).directory(root, create=create)


def level_dir(run: Path, level: int) -> Path:
    return Path(run) / f"level_{level}"


def read_level_ticket(run: Path, level: int) -> Ticket:
    """The ticket of IMP run `run` at `level`; a damaged one is a `TicketError` that says how to
    have it made again."""
    try:
        return load_ticket(level_dir(run, level) / TICKET_FILE)
    except TicketError as e:
        raise TicketError(f"{e}; it is a level of an IMP run: delete it and run again, and IMP makes it "
                          "again from the level before") from None


def _check(config: IMPConfig, data, levels: int) -> None:
    if data.info.name != config.dataset:
        raise IMPError(f"the IMP config is for dataset {config.dataset!r} but the data is {data.info.name!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
        raise IMPError(f"the number of levels must be an integer >= 0, got {levels!r}")


def check_depth(config: IMPConfig, info, levels: int) -> None:
    """Refuse, before any training, levels that would have to prune weights the excluded layers hold."""
    layout = _layout(config, info)
    size = {n: layout.shapes[n][0].numel() for n in layout.prunable}
    dense = sum(size[n] for n in resolved_exclusions(config, info))
    kept = imp_kept_counts(sum(size.values()), config.prune_fraction, levels)
    last = next((k for k, n in enumerate(kept) if n < dense), None)
    if last is not None:
        raise IMPError(f"IMP cannot reach level {levels} of {config.model}: level {last} would prune into the "
                       f"{dense:,} weights of the excluded layers ({kept[last - 1]:,} weights left at level "
                       f"{last - 1}); at most {last - 1} levels at prune fraction {config.prune_fraction}")


def run_imp(
    config: IMPConfig,
    data,
    levels: int,
    root: str | os.PathLike,
    device: torch.device | str | None = None,
    progress: bool = True,
    on_level: Callable[[LevelResult], None] | None = None,
) -> list[LevelResult]:
    """Run (or resume, or extend) IMP to level `levels`; one result per level 0..levels.

    `on_level(result)` is called as each level's result is known (e.g. to print it at once).
    """
    [results] = run_imps([config], data, [levels], root, group_size=1, device=device, progress=progress,
                         on_level=None if on_level is None else lambda i, result: on_level(result))
    if isinstance(results, TrainingDiverged):
        raise results
    return results


def run_imps(
    configs: list[IMPConfig],
    data,
    levels: list[int],
    root: str | os.PathLike,
    *,
    group_size: int,
    device: torch.device | str | None = None,
    progress: bool = True,
    on_level: Callable[[int, LevelResult], None] | None = None,
) -> list[list[LevelResult] | TrainingDiverged]:
    """`run_imp(configs[i], data, levels[i], root)` for every i, each level's trainings fused in
    groups of at most `group_size` (runs of one model, protocol, rewind step and precision); for a
    run whose training diverged, the `TrainingDiverged` that `run_imp` would raise.
    `on_level(i, result)` is called as run i's result of a level is known."""
    if len(levels) != len(configs):
        raise ValueError("one number of levels per IMP config")
    if group_size < 1:
        raise ValueError(f"group size must be at least 1, got {group_size}")
    hps, eligible = [], []
    for config, n in zip(configs, levels):
        _check(config, data, n)
        hp = imp_key(config, data)
        names = [name for name in _prunable(config, data.info) if name not in set(hp.excluded)]
        if not names and n > 0:
            raise IMPError("every prunable layer is excluded: nothing to prune")
        check_depth(config, data.info, n)
        hps.append(hp)
        eligible.append(names)
    runs = [hp.directory(root) for hp in hps]
    results: list[list[LevelResult]] = [[] for _ in configs]
    diverged: dict[int, TrainingDiverged] = {}
    for k in range(max(levels, default=-1) + 1):
        active = [i for i in range(len(configs)) if levels[i] >= k and i not in diverged]
        tickets = {}
        for i in active:  # every level's ticket is read (and so checked), also where its training is done
            _make_level_ticket(configs[i], data, runs[i], k, hps[i], eligible[i], root, device, progress)
            tickets[i] = read_level_ticket(runs[i], k)
        todo = [i for i in active if not (level_dir(runs[i], k) / RESULT_FILE).is_file()]
        groups: dict[tuple, list[int]] = {}
        for i in todo:
            c = configs[i]
            groups.setdefault((c.model, c.protocol, hps[i].rewind_step, c.precision), []).append(i)
        for (model, protocol, rewind_step, precision), indices in groups.items():
            for start in range(0, len(indices), group_size):
                chunk = indices[start : start + group_size]
                members = [
                    Member(tickets[i].build(device if device is not None else "cpu"), configs[i].data_seed,
                           tickets[i].mask, level_dir(runs[i], k) / TRAIN_DIR)
                    for i in chunk
                ]
                desc = (f"IMP level {k}/{levels[chunk[0]]} ({100 * tickets[chunk[0]].sparsity:.1f}% sparse)"
                        if len(chunk) == 1 else f"IMP level {k} of {model} x{len(chunk)} fused")
                trained = train_group(members, data, protocol, start_step=rewind_step, precision=precision,
                                      device=device, progress=progress, desc=desc)
                for i, res in zip(chunk, trained):
                    if isinstance(res, TrainingDiverged):
                        diverged[i] = res
                    else:
                        write_json_atomic(level_dir(runs[i], k) / RESULT_FILE, level_record(tickets[i], k, res))
        for i in active:
            if i in diverged:
                continue
            path = level_dir(runs[i], k) / RESULT_FILE
            results[i].append(read_record(path, lambda r: _level_result(r, level_dir(runs[i], k) / TICKET_FILE)))
            _write_summary(runs[i])
            if on_level is not None:
                on_level(i, results[i][-1])
    return [diverged.get(i, results[i]) for i in range(len(configs))]


def _make_level_ticket(config: IMPConfig, data, run: Path, k: int, hp: ImpKey, eligible: list[str], root, device,
                       progress) -> None:
    """Level k's ticket: the rewind point for level 0, else level k-1's trained weights (read from
    its finished training's checkpoint) pruned by magnitude, rewound."""
    path = level_dir(run, k) / TICKET_FILE
    if path.is_file():
        return
    if k == 0:
        _write_level_zero(config, data, run, path, hp, root, device, progress)
        return
    previous = read_level_ticket(run, k - 1)
    trained = load_checkpoint(level_dir(run, k - 1) / TRAIN_DIR / CHECKPOINT_FILE)["model"]
    mask = magnitude_prune(trained, previous.mask, config.prune_fraction, eligible)
    # Several ranks prune the same weights (DDP keeps them identical): check, then rank 0 writes
    # the ticket that every rank loads for the next level.
    distributed.check_identical(mask, f"the masks of IMP level {k}")
    save_ticket(_level_ticket(config, data, run, k, read_level_ticket(run, 0).state, mask, hp), path)


def _prunable(config: IMPConfig, info) -> list[str]:
    return list(_layout(config, info).prunable)


def _write_level_zero(config, data, run, ticket_path, hp, root, device, progress) -> None:
    model, step = rewind_point(
        config.model, data, config.protocol, config.rewind,
        seed=config.seed, data_seed=config.data_seed, root=root, device=device, progress=progress,
        precision=config.precision,
    )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_ticket(_level_ticket(config, data, run, 0, state, full_mask(model), hp), ticket_path)


def _level_ticket(config, data, run: Path, level: int, rewind_state, mask, hp) -> Ticket:
    """IMP level `level`: the rewind weights with `mask` applied."""
    model = build_model(config.model, data.info.input_shape, data.info.num_classes, seed=0)
    model.load_state_dict(rewind_state)
    return from_model(
        model, data.info, {k: v.cpu() for k, v in mask.items()},
        rewind_step=hp.rewind_step, rewind=config.rewind, protocol=config.protocol.to_dict(),
        provenance={
            "method": "imp",
            "description": f"IMP level {level} of run {run.name}",
            "run": run.name,
            "level": level,
            "prune_fraction": config.prune_fraction,
            "excluded": hp.excluded,
            "seed": config.seed,
            "data_seed": config.data_seed,
        },
    )


def level_record(ticket: Ticket, level: int, res) -> dict:
    """What `level_<k>/result.json` holds for a level whose training gave `res` (a TrainResult)."""
    kept, total = count(ticket.mask)
    return {
        "level": level,
        "sparsity": ticket.sparsity,
        "kept": kept,
        "prunable": total,
        "rewind_step": ticket.rewind_step,
        "test_accuracy": float(res.test_accuracy),
        "test_loss": float(res.test_loss),
        "train_loss": float(res.train_loss),
        "end_step": int(res.step),
        "seconds": float(res.seconds),
    }


def _level_result(r: dict, ticket_path: Path) -> LevelResult:
    return LevelResult(
        level=r["level"], sparsity=r["sparsity"], kept=r["kept"], prunable=r["prunable"],
        test_accuracy=r["test_accuracy"], test_loss=r["test_loss"], train_loss=r["train_loss"],
        rewind_step=r["rewind_step"], end_step=r["end_step"], train_steps=r["end_step"] - r["rewind_step"],
        seconds=r["seconds"], ticket_path=ticket_path,
    )


def _write_summary(run: Path) -> None:
    """levels.json: every finished level of the run (also those of earlier, longer calls)."""
    rows = []
    k = 0
    while (level_dir(run, k) / RESULT_FILE).is_file():
        row = read_record(level_dir(run, k) / RESULT_FILE, lambda r: _level_result(r, level_dir(run, k) / TICKET_FILE)).to_dict()
        row["ticket_path"] = f"level_{k}/{TICKET_FILE}"  # relative to the run directory
        rows.append(row)
        k += 1
    write_json_atomic(run / IMP_LEVELS_FILE, rows)


def read_summary(run: str | os.PathLike) -> list[dict]:
    """The finished levels of an IMP run directory."""
    path = Path(run) / IMP_LEVELS_FILE
    return read_record(path, list) or []
