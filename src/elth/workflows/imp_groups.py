"""IMP runs of one network and protocol (different seeds or prune settings) advanced level by
level together: each level's trainings run as fused groups (`elth.training.fused`).

Every file lands where `run_imp` puts it (level tickets, `level_<k>/train/`, `result.json`), made
by the same steps (rewind point, magnitude pruning of the trained weights, rewound ticket), so
`run_imp` afterwards reads each run back, writes its `levels.json` and returns its results; a
killed group resumes from the files like a lone run. A run whose training diverges at some level
stops there (its training records the failure, as `train` does) and the others go on.
"""
from __future__ import annotations

import os

import torch

from elth.files import CHECKPOINT_FILE, RESULT_FILE, TICKET_FILE, TRAIN_DIR, write_json_atomic
from elth.masks import magnitude_prune
from elth.tickets import save_ticket
from elth.training.checkpoint import load_checkpoint
from elth.training import TrainingDiverged
from elth.training.fused import Member, train_fused
from elth.workflows.imp import (
    IMPConfig,
    LevelResult,
    _check,
    _level_ticket,
    _prunable,
    _write_level_zero,
    imp_hparams,
    level_dir,
    read_level_ticket,
    level_record,
    run_imp,
)
from elth.runs import run_dir


def run_imp_together(
    configs: list[IMPConfig],
    data,
    levels: list[int],
    root: str | os.PathLike,
    *,
    group_size: int,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> list[list[LevelResult] | TrainingDiverged]:
    """`run_imp(configs[i], data, levels[i], root)` for every i, each level's trainings fused in
    groups of at most `group_size` (runs of one model, protocol, rewind step and precision); for a
    run whose training diverged, the `TrainingDiverged` that `run_imp` would raise."""
    if len(levels) != len(configs):
        raise ValueError("one number of levels per IMP config")
    hps = []
    for config, n in zip(configs, levels):
        _check(config, data, n)
        hps.append(imp_hparams(config, data))
    runs = [run_dir(root, "imp", hp) for hp in hps]
    diverged: dict[int, TrainingDiverged] = {}
    for k in range(max(levels, default=-1) + 1):
        active = [i for i in range(len(configs)) if levels[i] >= k and i not in diverged]
        for i in active:
            _make_level_ticket(configs[i], data, runs[i], k, hps[i], root, device, progress)
        todo = [i for i in active if not (level_dir(runs[i], k) / RESULT_FILE).is_file()]
        groups: dict[tuple, list[int]] = {}
        for i in todo:
            c = configs[i]
            groups.setdefault((c.model, c.protocol, hps[i]["rewind_step"], c.precision), []).append(i)
        for (model, protocol, rewind_step, precision), indices in groups.items():
            for start in range(0, len(indices), group_size):
                chunk = indices[start : start + group_size]
                tickets = [read_level_ticket(runs[i], k) for i in chunk]
                members = [
                    Member(t.build(device if device is not None else "cpu"), configs[i].data_seed, t.mask,
                           level_dir(runs[i], k) / TRAIN_DIR)
                    for i, t in zip(chunk, tickets)
                ]
                results = train_fused(
                    members, data, protocol, start_step=rewind_step, precision=precision, device=device,
                    progress=progress, desc=f"IMP level {k} of {model} x{len(chunk)} fused",
                )
                for i, ticket, res in zip(chunk, tickets, results):
                    if isinstance(res, TrainingDiverged):
                        diverged[i] = res
                    else:
                        write_json_atomic(level_dir(runs[i], k) / RESULT_FILE, level_record(ticket, k, res))
    return [
        diverged[i] if i in diverged else run_imp(c, data, n, root, device=device, progress=progress)
        for i, (c, n) in enumerate(zip(configs, levels))
    ]


def _make_level_ticket(config: IMPConfig, data, run, k: int, hp: dict, root, device, progress) -> None:
    """Level k's ticket as `run_imp` makes it: the rewind point for level 0, else level k-1's
    trained weights pruned by magnitude (read from its finished training's checkpoint)."""
    path = level_dir(run, k) / TICKET_FILE
    if path.is_file():
        return
    if k == 0:
        _write_level_zero(config, data, run, path, hp, root, device, progress)
        return
    previous = read_level_ticket(run, k - 1)
    trained_state = load_checkpoint(level_dir(run, k - 1) / TRAIN_DIR / CHECKPOINT_FILE)["model"]
    names = _prunable(config, data.info)
    eligible = [n for n in names if n not in set(hp["excluded"])]
    mask = magnitude_prune(trained_state, previous.mask, config.prune_fraction, eligible)
    rewind_state = read_level_ticket(run, 0).state
    save_ticket(_level_ticket(config, data, run, k, rewind_state, mask, hp), path)
