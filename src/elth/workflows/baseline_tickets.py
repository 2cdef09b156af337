"""Tickets from the pruning baselines, for a target network (what `elth prune` does).

Following the paper (Section 4), the score-based methods work on the target's own *rewind
weights*: the dense target trained to the rewind point under the same protocol and seeds as IMP
(`rewind_point`, cached and shared with IMP), scored and pruned globally over the eligible weights.

- magnitude, snip, grasp: one-shot by their scores; synflow: iteratively (see `scores`).
- random: with a like-ticket of the same model, each layer's mask of that ticket randomly permuted
  within the layer (layerwise sparsity kept); without one, the same sparsity in every eligible
  layer. Both on the target's rewind weights.
- reinit: the like-ticket's mask on freshly initialised weights, trained from step 0. The weights
  come from a seed derived from `seed` (never `seed` itself, which initialised the network the
  ticket was found in).
- snip-extra (the paper's Figure 3 baseline): the like-ticket is a *source* ticket of the same
  family, shallower than the target. It is stretched with the default ETT (appending); the target
  units that exist in the source (unit index < the source stage's length) keep their masks, and
  every eligible layer of an extra unit gets a SNIP mask keeping as many weights as its copied mask
  had. The extra units' weights (what SNIP scores and what the unpruned positions receive) are the
  stretch of the source's *dense* rewind weights: the ticket's own dense weights when it carries them
  (tickets made by IMP do), else the source's rewind point rebuilt from the ticket's recorded
  protocol, rewind point and seeds and checked against the ticket's (masked) weights.

`random` with a like-ticket and `reinit` reuse that ticket's layerwise counts, so `exclude` does not
apply to them.

Sparsity: `sparsity=S` keeps round((1 - S) x total) weights; a like-ticket of the same model is
matched exactly, to the weight; one of another model by its overall fraction. `total` counts every
prunable weight, excluded layers included.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass

import torch

from elth.elastic import transform
from elth.elastic.strategies import APPENDING
from elth.masks import (
    Mask,
    PruningError,
    count,
    eligible_names,
    excluded_names,
    full_mask,
)
from elth.methods import METHODS, PRUNING_METHODS
from elth.models import build_model, parse_model_name
from elth.sparsity.baselines import (
    ScoringOptions,
    collapse_warnings,
    derived_seed,
    kept_for_sparsity,
    permuted_mask,
    score_mask,
    snip_extra_mask,
    uniform_random_mask,
)
from elth.sparsity.scores import GRASP_TEMPERATURE
from elth.tickets import Ticket, check_dataset, from_model
from elth.training import Protocol, distributed
from elth.workflows.rewind import rewind_point

#: Methods that need a like-ticket (whose mask or source they use).
LIKE_METHODS = tuple(m for m in PRUNING_METHODS if METHODS[m].needs_like)


@dataclass
class PruneResult:
    ticket: Ticket
    requested_sparsity: float
    mask_seconds: float
    score_examples: int

    @property
    def warnings(self) -> list[str]:
        return self.ticket.warnings


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _check_request(method: str, model_name: str, sparsity: float | None, like: Ticket | None, data) -> None:
    if method not in PRUNING_METHODS:
        raise PruningError(f"unknown pruning method {method!r}; choose one of {', '.join(PRUNING_METHODS)}")
    parse_model_name(model_name)
    if method in LIKE_METHODS:
        if like is None:
            raise PruningError(f"{method} needs a ticket to work from (--like TICKET)")
        if sparsity is not None:
            raise PruningError(f"{method} takes its sparsity from the --like ticket; do not give --sparsity too")
    elif (sparsity is None) == (like is None):
        raise PruningError("give either a sparsity (--sparsity) or a ticket to match (--like), not both or neither")
    if like is not None:
        check_dataset(like, data.info)
    uses_mask = method == "reinit" or (method == "random" and like is not None)
    if uses_mask and like.model != model_name:
        raise PruningError(
            f"{method} reuses the --like ticket's mask, which is for {like.model}, not {model_name}"
        )


def _target_kept(total: int, sparsity: float | None, like: Ticket | None, model_name: str) -> tuple[int, float]:
    """(weights to keep, requested sparsity)."""
    if like is None:
        return kept_for_sparsity(total, sparsity), float(sparsity)
    if like.model == model_name:
        return count(like.mask)[0], like.sparsity
    return kept_for_sparsity(total, like.sparsity), like.sparsity


def _eligible(model, exclude: list[str] | None) -> tuple[list[str], list[str]]:
    return eligible_names(model, exclude), excluded_names(model, exclude)


def _like_record(like: Ticket | None, like_path: str | os.PathLike | None) -> dict | None:
    if like is None:
        return None
    kept, total = count(like.mask)
    return {
        "path": None if like_path is None else str(like_path),
        "model": like.model,
        "sparsity": like.sparsity,
        "kept": kept,
        "prunable": total,
        "content_hash": like.content_hash(),
        "method": like.provenance.get("method"),
    }


def prune_ticket(
    method: str,
    model_name: str,
    data,
    protocol: Protocol,
    *,
    rewind: str,
    sparsity: float | None = None,
    like: Ticket | None = None,
    like_path: str | os.PathLike | None = None,
    exclude: list[str] | None = None,
    options: ScoringOptions = ScoringOptions(),
    seed: int = 0,
    data_seed: int = 0,
    root: str | os.PathLike = "runs",
    device: torch.device | str | None = None,
    precision: str = "fp32",
    progress: bool = True,
) -> PruneResult:
    """A ticket for `model_name` made by `method` (see the module docstring).

    `exclude=None` keeps the model's default dense layers (the output layer of VGGs and MLPs).
    `seed` and `data_seed` select the rewind point exactly as IMP's seeds do; `data_seed` also
    selects the scoring examples, `seed` the random draws of `random` and `reinit`. `precision`
    is that of the dense training to the rewind point (part of what selects it, as for IMP).
    """
    _check_request(method, model_name, sparsity, like, data)
    if method == "reinit":
        return _reinit(model_name, data, protocol, like, like_path, options, seed, data_seed, device)
    if method == "snip-extra":
        return _snip_extra(model_name, data, like, like_path, exclude, options, seed, data_seed, root,
                           device, precision, progress)

    model, step = rewind_point(model_name, data, protocol, rewind, seed=seed, data_seed=data_seed, root=root,
                               device=device, progress=progress, precision=precision)
    eligible, excluded = _eligible(model, exclude)
    total = count(full_mask(model))[1]
    kept, requested = _target_kept(total, sparsity, like, model_name)
    n_examples = 0
    _sync(device)
    start = time.perf_counter()
    if method == "random":
        g = torch.Generator().manual_seed(derived_seed(seed, "random"))
        if like is not None:
            mask = permuted_mask(like.mask, g)
        else:
            mask = uniform_random_mask(full_mask(model), eligible, kept, g)
    else:
        examples = None
        if METHODS[method].needs_examples:
            examples = data.scoring_examples(options.score_examples, data_seed)
            n_examples = int(examples[1].numel())
        mask = score_mask(method, model, eligible, kept, examples=examples, options=options, progress=progress)
    _sync(device)
    seconds = time.perf_counter() - start
    _check_count(mask, kept)
    # Several ranks: scores all-reduced over the scoring examples, seeds shared: one mask everywhere.
    distributed.check_identical(mask, f"the {method} masks")
    if method == "random" and like is not None:
        excluded = None  # the like-ticket's layerwise counts decide
    provenance = _provenance(method, model_name, options, like, like_path, requested, mask, seconds,
                             n_examples, seed, data_seed, excluded, precision=precision)
    ticket = from_model(model, data.info, mask, rewind_step=step, rewind=rewind, protocol=protocol.to_dict(),
                        provenance=provenance, warnings=collapse_warnings(mask))
    return PruneResult(ticket, requested, seconds, n_examples)


def _check_count(mask: Mask, kept: int) -> None:
    actual = count(mask)[0]
    if abs(actual - kept) > 1:  # a bug, never a user error
        raise AssertionError(f"pruning kept {actual} weights instead of {kept}")


def _provenance(method, model_name, options: ScoringOptions, like, like_path, requested, mask, seconds,
                n_examples, seed, data_seed, excluded, **extra) -> dict:
    kept, total = count(mask)
    opts = options.to_dict()
    if excluded is not None:
        opts["excluded"] = excluded
    if method == "grasp":
        opts["grasp_temperature"] = GRASP_TEMPERATURE
    if method not in ("synflow",):
        opts.pop("synflow_rounds")
    if not METHODS[method].needs_examples:
        for k in ("score_examples_per_class", "score_train_mode", "score_batch_size"):
            opts.pop(k)
    return {
        "method": method,
        "description": f"{method} pruning of {model_name} to {100 * (1 - kept / total):.2f}% sparsity",
        "options": opts,
        "like": _like_record(like, like_path),
        "requested_sparsity": requested,
        "sparsity": 1 - kept / total,
        "kept": kept,
        "prunable": total,
        "mask_seconds": seconds,
        "score_examples": n_examples,
        "seed": seed,
        "data_seed": data_seed,
        **extra,
    }


def _reinit(model_name, data, protocol, like: Ticket, like_path, options, seed, data_seed, device) -> PruneResult:
    _sync(device)
    start = time.perf_counter()
    init_seed = derived_seed(seed, "reinit")
    info = data.info
    model = build_model(model_name, info.input_shape, info.num_classes, seed=init_seed)
    mask = {k: v.clone() for k, v in like.mask.items()}
    seconds = time.perf_counter() - start
    # "seed" is the seed that initialised these weights (as for IMP tickets); rewind point 0.
    provenance = _provenance("reinit", model_name, options, like, like_path, like.sparsity, mask, seconds, 0,
                             init_seed, data_seed, excluded=None, reinit_seed=seed)
    ticket = from_model(model, info, mask, rewind_step=0, rewind="0", protocol=protocol.to_dict(),
                        provenance=provenance, warnings=collapse_warnings(mask))
    return PruneResult(ticket, like.sparsity, seconds, 0)


# -- snip-extra ---------------------------------------------------------------------------------
def _source_dense(like: Ticket, data, seed, data_seed, root, device, precision, progress):
    """The dense rewind weights the source ticket was masked from, checked against the ticket."""
    prov = like.provenance or {}
    src_seed = int(seed if prov.get("seed") is None else prov["seed"])
    src_data_seed = int(data_seed if prov.get("data_seed") is None else prov["data_seed"])
    precision = str(prov.get("precision", precision))
    if not like.protocol:
        raise PruningError("the source ticket records no training protocol, so its dense rewind weights cannot be rebuilt")
    src_protocol = Protocol.from_dict(like.protocol)
    model, step = rewind_point(like.model, data, src_protocol, like.rewind, seed=src_seed, data_seed=src_data_seed,
                               root=root, device=device, progress=progress, precision=precision)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    mismatch = step != like.rewind_step
    for k, v in like.state.items():
        expected = state[k] * like.mask[k].to(state[k].dtype) if k in like.mask else state[k]
        if not v.is_floating_point():
            continue
        if not torch.allclose(v, expected, rtol=1e-4, atol=1e-6):
            mismatch = True
            break
    if mismatch:
        raise PruningError(
            f"the dense rewind weights of {like.model} (seed {src_seed}, data seed {src_data_seed}, rewind "
            f"{like.rewind}) do not match the source ticket's weights; snip-extra needs the network the ticket "
            "was found in (its provenance's seeds and protocol)"
        )
    return model, src_seed, src_data_seed


def _extra_layers(target_name: str, source_name: str, names: list[str], info) -> list[str]:
    """The weights among `names` in target units whose index is beyond the source stage's length."""
    with torch.device("meta"):
        source = build_model(source_name, info.input_shape, info.num_classes, seed=None)
        target = build_model(target_name, info.input_shape, info.num_classes, seed=None)
    lengths = source.structure().stage_lengths
    structure = target.structure()
    if len(lengths) != len(structure.stages):
        raise PruningError(f"{source_name} and {target_name} do not have the same stages")
    out = []
    for n in names:
        part, s, u = structure.part_of(n)
        if part == "unit" and u >= lengths[s]:
            out.append(n)
    return out


def _snip_extra(model_name, data, like: Ticket, like_path, exclude, options, seed, data_seed, root, device,
                precision, progress) -> PruneResult:
    src_lengths = _stage_lengths(like.model, data.info)
    tgt_lengths = _stage_lengths(model_name, data.info)
    if len(src_lengths) != len(tgt_lengths) or any(t < s for s, t in zip(src_lengths, tgt_lengths)) \
            or tgt_lengths == src_lengths:
        raise PruningError(
            f"snip-extra needs a source ticket shallower than the target: {like.model} has stages "
            f"{list(src_lengths)}, {model_name} has {list(tgt_lengths)}"
        )
    rebuilt = None
    if like.dense is None:  # a ticket without dense weights: rebuild its source network's rewind point
        rebuilt = _source_dense(like, data, seed, data_seed, root, device, precision, progress)
    _sync(device)
    start = time.perf_counter()
    stretched = transform(like, model_name, order=APPENDING,
                          source_path=None if like_path is None else str(like_path))
    if rebuilt is None:
        dense_weights = stretched.dense
    else:
        dense_model = rebuilt[0]
        dense_ticket = from_model(dense_model, like.dataset, full_mask(dense_model), rewind_step=like.rewind_step,
                                  rewind=like.rewind, protocol=like.protocol)
        stretched_dense = transform(dense_ticket, model_name, order=APPENDING)
        dense_weights = {k: stretched_dense.state[k] for k in stretched.mask}
    info = data.info
    target = build_model(model_name, info.input_shape, info.num_classes, seed=None)
    eligible, excluded = _eligible(target, exclude)
    extra = _extra_layers(model_name, like.model, eligible, info)
    state = dict(stretched.state)
    for n in extra:
        state[n] = dense_weights[n]
    target.load_state_dict(state)
    if device is not None:
        target.to(device)
    examples = data.scoring_examples(options.score_examples, data_seed)
    mask = snip_extra_mask(target, stretched.mask, extra, examples, options=options)
    _sync(device)
    seconds = time.perf_counter() - start
    kept = count(stretched.mask)[0]
    _check_count(mask, kept)
    distributed.check_identical(mask, "the snip-extra masks")
    provenance = _provenance(
        "snip-extra", model_name, options, like, like_path, stretched.sparsity, mask, seconds,
        int(examples[1].numel()), seed, data_seed, excluded,
        ett={"order": APPENDING, "plan": stretched.provenance.get("plan")},
        snip_layers=extra,
        dense_source="ticket" if rebuilt is None else "rebuilt rewind point",
    )
    if rebuilt is not None:
        provenance["source_seeds"] = {"seed": rebuilt[1], "data_seed": rebuilt[2]}
    warnings = list(stretched.warnings) + collapse_warnings(mask)
    ticket = from_model(target, info, mask, rewind_step=stretched.rewind_step, rewind=stretched.rewind,
                        protocol=stretched.protocol, provenance=provenance, warnings=warnings)
    # `target` holds zeros where the copied masks prune: the dense rewind values fill those positions.
    ticket.dense = {k: torch.where(m, ticket.state[k], dense_weights[k].to(ticket.state[k].dtype))
                    for k, m in ticket.mask.items()}
    return PruneResult(ticket, stretched.sparsity, seconds, int(examples[1].numel()))


def _stage_lengths(model_name: str, info) -> tuple[int, ...]:
    with torch.device("meta"):
        model = build_model(model_name, info.input_shape, info.num_classes, seed=None)
    return model.structure().stage_lengths


def permute_ticket_mask(ticket: Ticket, seed: int) -> Ticket:
    """The ticket's rewind weights under its masks permuted within each layer (layerwise counts kept).

    The newly unpruned positions need the ticket's real rewind values, so the ticket must carry its
    dense weights (IMP tickets and their elastic transformations do). Used for the paper's Figure 3
    control "the source's weights, a random mask".
    """
    if ticket.dense is None:
        raise PruningError(
            "permuting a ticket's masks needs its dense rewind weights, and this ticket has none "
            "(tickets from `elth imp` and `elth transform` carry them)"
        )
    g = torch.Generator().manual_seed(derived_seed(seed, "random"))
    mask = permuted_mask(ticket.mask, g)
    state = dict(ticket.state)
    for k, m in mask.items():
        state[k] = ticket.dense[k] * m.to(ticket.dense[k].dtype)
    provenance = {
        "method": "permuted masks",
        "description": f"the masks of a {ticket.model} ticket permuted within each layer, on its rewind weights",
        "from": copy.deepcopy(ticket.provenance),
        "seed": seed,
    }
    return Ticket(ticket.model, ticket.dataset, state, mask, ticket.rewind_step, ticket.rewind,
                  dict(ticket.protocol), provenance, collapse_warnings(mask), dict(ticket.dense))
