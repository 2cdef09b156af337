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
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from elth.errors import ElthError
from elth.files import (
    IMP_LEVELS_FILE,
    RESULT_FILE,
    TICKET_FILE,
    TRAIN_DIR,
    read_record,
    write_json_atomic,
)
from elth.limits import BadNumberError, check_real, check_seed
from elth.masks import count, excluded_names, full_mask, imp_kept_counts, magnitude_prune
from elth.models import build_model
from elth.runs import run_dir
from elth.tickets import (
    ModelLayout,
    Ticket,
    TicketError,
    from_model,
    load_ticket,
    model_layout,
    save_ticket,
)
from elth.training import Protocol, distributed, train
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


def imp_hparams(config: IMPConfig, data) -> dict:
    return {
        "model": config.model,
        "dataset": data.info.to_dict(),
        "protocol": config.protocol.to_dict(),
        "rewind_step": rewind_step_of(config.rewind, data, config.protocol),
        "prune_fraction": config.prune_fraction,
        "excluded": resolved_exclusions(config, data.info),
        "seed": config.seed,
        "data_seed": config.data_seed,
        "precision": config.precision,
    }


def imp_run_dir(config: IMPConfig, data, root: str | os.PathLike, create: bool = True) -> Path:
    """`root/imp-<hash>`: where `run_imp(config, data, ..., root)` keeps its levels (created unless
    `create` is False)."""
    return run_dir(root, "imp", imp_hparams(config, data), create=create)


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
    _check(config, data, levels)
    hp = imp_hparams(config, data)
    eligible = [n for n in _prunable(config, data.info) if n not in set(hp["excluded"])]
    if not eligible and levels > 0:
        raise IMPError("every prunable layer is excluded: nothing to prune")
    check_depth(config, data.info, levels)
    run = run_dir(root, "imp", hp)
    results: list[LevelResult] = []
    rewind_state: dict[str, torch.Tensor] = {}
    for k in range(levels + 1):
        ticket_path = level_dir(run, k) / TICKET_FILE
        if k == 0 and not ticket_path.is_file():
            _write_level_zero(config, data, run, ticket_path, hp, root, device, progress)
        ticket = read_level_ticket(run, k)
        if k == 0:
            rewind_state = ticket.state  # level 0 is the rewind weights, unmasked
        model = None
        result_path = level_dir(run, k) / RESULT_FILE
        if not result_path.is_file():
            model, result = _train_level(config, data, ticket, k, levels, run, device, progress)
            write_json_atomic(result_path, result)
        results.append(read_record(result_path, lambda r: _level_result(r, ticket_path)))
        _write_summary(run)
        if on_level is not None:
            on_level(results[-1])
        next_path = level_dir(run, k + 1) / TICKET_FILE
        if k < levels and not next_path.is_file():
            if model is None:  # trained in an earlier, interrupted call: its training reloads the final weights
                model, _ = _train_level(config, data, ticket, k, levels, run, device, progress)
            trained = {n: p.detach() for n, p in model.named_parameters()}
            mask = magnitude_prune(trained, ticket.mask, config.prune_fraction, eligible)
            # Several ranks prune the same weights (DDP keeps them identical): check, then rank 0 writes
            # the ticket that every rank loads for the next level.
            distributed.check_identical(mask, f"the masks of IMP level {k + 1}")
            save_ticket(_level_ticket(config, data, run, k + 1, rewind_state, mask, hp), next_path)
    return results


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
        rewind_step=hp["rewind_step"], rewind=config.rewind, protocol=config.protocol.to_dict(),
        provenance={
            "method": "imp",
            "description": f"IMP level {level} of run {run.name}",
            "run": run.name,
            "level": level,
            "prune_fraction": config.prune_fraction,
            "excluded": hp["excluded"],
            "seed": config.seed,
            "data_seed": config.data_seed,
        },
    )


def _train_level(config, data, ticket: Ticket, level: int, levels: int, run: Path, device, progress):
    """Train level `level` from the rewind step to the end with its mask fixed (resumable)."""
    model = ticket.build(device if device is not None else "cpu")
    res = train(
        model, data, config.protocol, data_seed=config.data_seed, start_step=ticket.rewind_step,
        mask=ticket.mask, out_dir=level_dir(run, level) / TRAIN_DIR, precision=config.precision,
        device=device, progress=progress,
        desc=f"IMP level {level}/{levels} ({100 * ticket.sparsity:.1f}% sparse)",
    )
    return model, level_record(ticket, level, res)


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
