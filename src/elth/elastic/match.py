"""Sparsity-matched ETT tickets (beyond the paper): the transformed ticket brought to exactly the
sparsity of the ticket it came from.

A stretch copies units whose sparsity differs from the network's, and a squeeze drops some, so an
ETT ticket's sparsity drifts from its source level's. Matching changes only the weights of the
replicable units (every unit but the first, transition unit of each stage); the stem, the head and
the transition units stay exactly as the transformation copied them. Too dense: the kept weights of
those units with the smallest rewind magnitude are pruned. Too sparse: their pruned weights with the
largest dense rewind magnitude are restored, with those rewind values (this needs the ticket's
dense rewind weights). Ties are broken by position, so the result is deterministic.
"""
from __future__ import annotations

import torch

from elth.elastic.plan import model_view
from elth.masks import count
from elth.tickets import Ticket, TicketError


def adjustable_keys(ticket: Ticket) -> list[str]:
    """The prunable weights matching may change: those of every non-transition unit."""
    view = model_view(ticket.model, tuple(ticket.dataset.input_shape), ticket.dataset.num_classes)
    out = []
    for key in ticket.mask:
        part, _, unit = view.structure.part_of(key)
        if part == "unit" and unit is not None and unit > 0:
            out.append(key)
    return out


def has_replicable_units(model: str) -> bool:
    """Whether some stage of `model` has units besides its transition (otherwise nothing can match)."""
    return any(n > 1 for n in model_view(model).structure.stage_lengths)


def match_sparsity(ticket: Ticket, sparsity: float) -> Ticket:
    """A copy of `ticket` whose sparsity is `sparsity` to the nearest weight (see the module doc);
    its provenance records what was changed under "match_sparsity"."""
    kept, total = count(ticket.mask)
    wanted = total - int(round(sparsity * total))
    change = wanted - kept  # > 0: restore weights; < 0: prune weights
    keys = adjustable_keys(ticket)
    if change != 0 and not keys:
        raise TicketError(f"the {ticket.model} ticket has no replicable unit whose weights could match the sparsity")
    magnitudes = ticket.dense if ticket.dense is not None else ticket.state
    if change > 0 and ticket.dense is None:
        raise TicketError("restoring pruned weights needs a ticket with dense rewind weights "
                          "(tickets made by elth imp have them)")
    mask = {k: v.clone() for k, v in ticket.mask.items()}
    state = {k: v.clone() for k, v in ticket.state.items()}
    if change != 0:
        # candidates: kept weights when pruning, pruned weights when restoring
        pick = [(k, (mask[k] if change < 0 else ~mask[k]).reshape(-1)) for k in keys]
        scores = torch.cat([magnitudes[k].reshape(-1).abs().float()[sel] for k, sel in pick])
        available = scores.numel()
        if abs(change) > available:
            what = "kept" if change < 0 else "pruned"
            raise TicketError(f"matching {100 * sparsity:.2f}% sparsity needs {abs(change)} {what} weights in the "
                              f"replicable units, which have only {available}")
        # smallest magnitudes first when pruning, largest first when restoring; stable: ties by position
        order = torch.sort(scores if change < 0 else -scores, stable=True).indices[: abs(change)]
        chosen = torch.zeros(available, dtype=torch.bool)
        chosen[order] = True
        offset = 0
        for k, sel in pick:
            n = int(sel.sum())
            flat_positions = sel.nonzero().reshape(-1)[chosen[offset: offset + n]]
            offset += n
            m = mask[k].reshape(-1)
            m[flat_positions] = change > 0
            mask[k] = m.view_as(ticket.mask[k])
            state[k] = ticket.dense[k] * mask[k].to(state[k].dtype) if ticket.dense is not None \
                else state[k] * mask[k].to(state[k].dtype)
    before = 1.0 - kept / total if total else 0.0
    after_kept, _ = count(mask)
    provenance = dict(ticket.provenance)
    provenance["match_sparsity"] = {
        "wanted": float(sparsity),
        "before": before,
        "after": 1.0 - after_kept / total if total else 0.0,
        "pruned": max(0, -change),
        "restored": max(0, change),
        "changed": keys,
        "rule": "non-transition units only; prune the smallest, restore the largest dense rewind magnitudes",
    }
    return Ticket(
        model=ticket.model, dataset=ticket.dataset, state=state, mask=mask, rewind_step=ticket.rewind_step,
        rewind=ticket.rewind, protocol=ticket.protocol, provenance=provenance, warnings=list(ticket.warnings),
        dense=ticket.dense,
    )


def source_sparsity(ticket: Ticket) -> float:
    """The sparsity of the ticket an ETT ticket was made from (its provenance)."""
    try:
        return float(ticket.provenance["source"]["sparsity"])
    except (KeyError, TypeError, ValueError):
        raise TicketError("the ticket records no source sparsity: it was not made by an elastic ticket "
                          "transformation") from None

