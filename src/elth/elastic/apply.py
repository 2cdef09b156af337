"""Applying an ETT plan to a ticket: one routine for every model family.

Every state-dict key of the target model is filled by copying one key of the source ticket: stem
and head keys from themselves, a unit key from the same relative key of the unit the plan names
(``layer2.3.conv1.weight`` <- ``layer2.1.conv1.weight``). Masks and dense rewind weights follow
their weights; BN parameters and buffers (running statistics, ``num_batches_tracked``) follow their
unit. Nothing is ever left at a fresh initialisation: a key with no source is an error.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from elth.elastic.plan import Plan, PlanError, check_compatible, format_plan, model_view, parse_plan, validate_plan
from elth.elastic.strategies import APPENDING, CONSECUTIVE, make_plan
from elth.masks import count
from elth.models import ElasticStructure
from elth.tickets import Ticket, TicketError

#: Why random replicas refuse a ticket without dense rewind weights.
NEEDS_DENSE = (
    "random replicas need a ticket with dense rewind weights (tickets made by elth imp have them), "
    "so that a permuted mask selects real rewind values instead of the zeros of pruned positions"
)

METHOD = "elastic_ticket_transformation"


def source_key(key: str, plan: Plan, source: ElasticStructure, target: ElasticStructure) -> str:
    """The source state-dict key that fills target key `key` under `plan`."""
    part, stage, unit = target.part_of(key)
    if part != "unit":
        return key
    prefix = target.stages[stage][unit]
    return source.stages[stage][plan[stage][unit]] + key[len(prefix):]


def replica_units(plan: Plan) -> list[tuple[int, int]]:
    """(stage, target unit) of every replica: each occurrence of a source unit after its first."""
    out = []
    for s, stage in enumerate(plan):
        seen: set[int] = set()
        for j, i in enumerate(stage):
            if i in seen:
                out.append((s, j))
            seen.add(i)
    return out


def _permute_replica_masks(
    state: dict[str, torch.Tensor], mask: dict[str, torch.Tensor], dense: dict[str, torch.Tensor],
    plan: Plan, target: ElasticStructure, seed: int,
) -> None:
    """Give every replica a random permutation of its copied mask, layer by layer, and the copied
    dense rewind weights where the new mask keeps them (in place)."""
    g = torch.Generator().manual_seed(seed)
    for s, j in replica_units(plan):
        for key in target.keys_of(target.stages[s][j], list(mask)):
            m = mask[key]
            permuted = m.reshape(-1)[torch.randperm(m.numel(), generator=g)].view_as(m)
            mask[key] = permuted
            state[key] = dense[key] * permuted.to(dense[key].dtype)


def apply_plan(
    ticket: Ticket, target_model: str, plan: Plan, *, random_replicas: bool = False, seed: int = 0,
    source_path: str | None = None,
) -> Ticket:
    """The ticket for `target_model` that `plan` makes of `ticket` (validated first; PlanError if unusable).

    `random_replicas`: every replica's mask is a seeded random permutation of its source mask within
    each layer (layerwise sparsity kept); its weights are the copied dense rewind weights where the
    new mask keeps them (TicketError if the ticket has no dense weights). `source_path` (the
    ticket's file, when known) is recorded in the provenance.
    """
    shape, classes = tuple(ticket.dataset.input_shape), ticket.dataset.num_classes
    source, target = model_view(ticket.model, shape, classes), model_view(target_model, shape, classes)
    validate_plan(plan, source, target)
    plan = tuple(tuple(int(i) for i in stage) for stage in plan)
    if random_replicas and ticket.dense is None and replica_units(plan):
        raise TicketError(NEEDS_DENSE)
    src_struct, tgt_struct = source.structure, target.structure

    state: dict[str, torch.Tensor] = {}
    for key, shape_ in target.shapes:
        k = source_key(key, plan, src_struct, tgt_struct)
        if k not in ticket.state:
            raise TicketError(
                f"the {ticket.model} ticket has no tensor {k!r}, which {key!r} of {target_model} needs"
            )
        if tuple(ticket.state[k].shape) != shape_:
            raise TicketError(f"{k!r} of the ticket has shape {tuple(ticket.state[k].shape)}, not {shape_}")
        state[key] = ticket.state[k].clone()
    mask: dict[str, torch.Tensor] = {}
    dense: dict[str, torch.Tensor] | None = None if ticket.dense is None else {}
    for key in target.prunable:
        k = source_key(key, plan, src_struct, tgt_struct)
        if k not in ticket.mask or (dense is not None and k not in ticket.dense):
            what = "mask" if k not in ticket.mask else "dense weights"
            raise TicketError(
                f"the {ticket.model} ticket has no {what} for {k!r}, which {key!r} of {target_model} needs"
            )
        mask[key] = ticket.mask[k].clone()
        if dense is not None:
            dense[key] = ticket.dense[k].clone()
    if random_replicas and dense is not None:
        _permute_replica_masks(state, mask, dense, plan, tgt_struct, seed)

    kept, total = count(mask)
    source_sparsity = ticket.sparsity
    provenance = {
        "method": METHOD,
        "description": f"{ticket.model} ticket transformed to {target_model} by the plan {format_plan(plan)}",
        "source": {
            "path": source_path,
            "model": ticket.model,
            "checksum": ticket.checksum(),
            "sparsity": source_sparsity,
            "provenance": copy.deepcopy(ticket.provenance),
        },
        "plan": format_plan(plan),
        "random_replicas": bool(random_replicas),
        "replica_seed": int(seed) if random_replicas else None,
        "sparsity": {"source": source_sparsity, "target": 1.0 - kept / total if total else 0.0},
    }
    # The weights are the source's, so its seeds are this ticket's: a baseline made --like it starts
    # from the setting of the source's IMP run, and training uses the source's data order by default.
    for key in ("seed", "data_seed"):
        if ticket.provenance.get(key) is not None:
            provenance[key] = ticket.provenance[key]
    return Ticket(
        model=target_model,
        dataset=ticket.dataset,
        state=state,
        mask=mask,
        rewind_step=ticket.rewind_step,
        rewind=ticket.rewind,
        protocol=copy.deepcopy(ticket.protocol),
        provenance=provenance,
        warnings=[f"source ticket: {w}" for w in ticket.warnings],
        dense=dense,
    )


def transform(
    ticket: Ticket,
    target_model: str,
    *,
    plan: Plan | str | None = None,
    order: str = APPENDING,
    squeeze_mode: str = CONSECUTIVE,
    units: Iterable[int] | None = None,
    drop: Iterable[int] | None = None,
    random_replicas: bool = False,
    seed: int = 0,
    source_path: str | None = None,
) -> Ticket:
    """Stretch or squeeze `ticket` into `target_model`, by an explicit `plan` or by a strategy (`make_plan`)."""
    shape, classes = tuple(ticket.dataset.input_shape), ticket.dataset.num_classes
    source, target = model_view(ticket.model, shape, classes), model_view(target_model, shape, classes)
    check_compatible(source, target)
    n_source, n_target = source.structure.stage_lengths, target.structure.stage_lengths
    if plan is not None:
        if units is not None or drop is not None:
            raise PlanError("give either an explicit plan or units to replicate/drop, not both")
        if isinstance(plan, str):
            plan = parse_plan(plan, len(n_target))
        strategy = {"kind": "explicit plan"}
    else:
        units = None if units is None else tuple(int(u) for u in units)
        drop = None if drop is None else tuple(int(u) for u in drop)
        plan = make_plan(n_source, n_target, order=order, squeeze_mode=squeeze_mode, units=units, drop=drop)
        strategy = {"kind": "strategy", "stage_lengths": {"source": list(n_source), "target": list(n_target)}}
        if any(t > s for s, t in zip(n_source, n_target)):
            strategy.update(order=order, units=None if units is None else list(units))
        if any(t < s for s, t in zip(n_source, n_target)):
            strategy.update(squeeze=squeeze_mode, drop=None if drop is None else list(drop))
    result = apply_plan(
        ticket, target_model, plan, random_replicas=random_replicas, seed=seed, source_path=source_path
    )
    result.provenance["strategy"] = strategy
    return result
