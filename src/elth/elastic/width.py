"""Width transformations of tickets (beyond the paper): stretching or squeezing a network's width.

A width plan is, for every coupled group of units of the target (`models.structure.WidthGroup`: a
hidden layer's neurons with the next layer's inputs), the source unit each target unit comes from:
`WidthPlan = {group name: (source unit of target unit 0, 1, ...)}`. Strategies only make plans;
`apply_width_plan` is the one routine that applies a plan, for any family that declares its width:

- a producer tensor (a layer's weight rows, its bias) takes the rows of its source units; masks and
  dense rewind weights follow their weights;
- a consumer tensor (the next layer's weight columns) takes the columns of the source units; with
  `rescale`, each column is divided by how many target units copy its source unit, so the replicas
  together pass on what the source unit did: at the rewind point the stretched network computes the
  same function as the source (Net2Net's function-preserving widening), masks copied with the units;
- with `permute_replicas`, every copy after a unit's first gets its producer rows' masks permuted
  (and the dense rewind weights they then keep), to break the copies' symmetry.

Stretching replicates source units in order (unit j of the target copies unit j mod W_source);
squeezing keeps `W_target` units ranked by a criterion of the ticket: `norm` (the L2 norm of the
unit's kept rewind weights, producers and consumers), `density` (the fraction of its weights the
mask keeps) or `first` (units 0..W_target-1: the naive control).
"""
from __future__ import annotations


import torch

from elth.elastic.plan import PlanError
from elth.models import build_model, parse_model_name
from elth.tickets import Ticket

WidthPlan = dict[str, tuple[int, ...]]
#: How a squeeze picks the units it keeps (the first is the default).
SQUEEZE_CRITERIA = ("norm", "density", "first")
METHOD = "width_transformation"


def _groups(model_name: str, shape, classes: int):
    model = build_model(model_name, shape, classes, seed=0)
    groups = model.width_groups()
    if not groups:
        raise PlanError(f"{model_name}: its family declares no width to stretch or squeeze")
    return model, groups


def _width(state: dict[str, torch.Tensor], group) -> int:
    key, dim = group.producers[0]
    return state[key].shape[dim]


def unit_scores(ticket: Ticket, group, criterion: str) -> torch.Tensor:
    """One score per unit of `group` in `ticket` (larger: kept first)."""
    n = _width(ticket.state, group)
    if criterion == "first":
        return -torch.arange(n, dtype=torch.float64)  # unit 0 first
    total = torch.zeros(n, dtype=torch.float64)
    size = torch.zeros(n, dtype=torch.float64)
    for key, dim in (*group.producers, *group.consumers):
        w = ticket.state[key].to(torch.float64).movedim(dim, 0).reshape(n, -1)
        if criterion == "norm":
            total += (w ** 2).sum(1)
        else:  # density: kept weights over weights, on the masked tensors only
            if key in ticket.mask:
                m = ticket.mask[key].movedim(dim, 0).reshape(n, -1)
                total += m.sum(1).to(torch.float64)
                size += m.shape[1]
    if criterion == "density":
        return total / size.clamp(min=1)
    return total.sqrt()


def make_width_plan(ticket: Ticket, target_model: str, criterion: str = SQUEEZE_CRITERIA[0]) -> WidthPlan:
    """Stretch (replicate units in order) or squeeze (keep the best-ranked units, in their order)
    every width group of `ticket`'s network to `target_model`'s."""
    if criterion not in SQUEEZE_CRITERIA:
        raise PlanError(f"unknown squeeze criterion {criterion!r} (one of {', '.join(SQUEEZE_CRITERIA)})")
    shape, classes = tuple(ticket.dataset.input_shape), ticket.dataset.num_classes
    _, source_groups = _groups(ticket.model, shape, classes)
    target, target_groups = _groups(target_model, shape, classes)
    check_width_compatible(ticket.model, target_model, source_groups, target_groups)
    target_state = target.state_dict()
    plan: WidthPlan = {}
    for sg, tg in zip(source_groups, target_groups):
        ws, wt = _width(ticket.state, sg), _width(target_state, tg)
        if wt >= ws:
            plan[tg.name] = tuple(j % ws for j in range(wt))
        else:
            order = torch.argsort(unit_scores(ticket, sg, criterion), descending=True, stable=True)
            plan[tg.name] = tuple(sorted(int(i) for i in order[:wt]))
    return plan


def check_width_compatible(source: str, target: str, source_groups, target_groups) -> None:
    """Two networks of one family and depth: the same width groups, of other sizes."""
    a, b = parse_model_name(source), parse_model_name(target)
    if a.kind != b.kind or a.depth != b.depth or a.fc_layers != b.fc_layers:
        raise PlanError(f"{source} -> {target}: a width transformation keeps the family and the depth "
                        "(change the depth in a step of its own)")
    if [g.name for g in source_groups] != [g.name for g in target_groups]:
        raise PlanError(f"{source} -> {target}: their width groups differ")


def apply_width_plan(ticket: Ticket, target_model: str, plan: WidthPlan, *, rescale: bool = True,
                     permute_replicas: bool = False, seed: int = 0) -> Ticket:
    """`ticket` moved to `target_model` (the same family and depth, other widths) by `plan`."""
    shape, classes = tuple(ticket.dataset.input_shape), ticket.dataset.num_classes
    _, source_groups = _groups(ticket.model, shape, classes)
    target, target_groups = _groups(target_model, shape, classes)
    check_width_compatible(ticket.model, target_model, source_groups, target_groups)
    if permute_replicas and ticket.dense is None:
        raise PlanError("permuted replica masks need a ticket with dense rewind weights (tickets made by elth imp "
                        "have them)")
    state = {k: v.clone() for k, v in ticket.state.items()}
    mask = {k: v.clone() for k, v in ticket.mask.items()}
    dense = None if ticket.dense is None else {k: v.clone() for k, v in ticket.dense.items()}
    g = torch.Generator().manual_seed(seed)
    expected = target.state_dict()
    for sg, tg in zip(source_groups, target_groups):
        units = plan.get(tg.name)
        ws = _width(ticket.state, sg)
        wt = _width(expected, tg)
        if units is None or len(units) != wt or not all(0 <= u < ws for u in units):
            raise PlanError(f"width group {tg.name}: the plan must give each of its {wt} target units a source unit "
                            f"0..{ws - 1}")
        index = torch.tensor(units)
        copies = torch.bincount(index, minlength=ws).to(torch.float64)
        for key, dim in sg.producers:
            for tensors in (state, mask, dense):
                if tensors is not None and key in tensors:
                    tensors[key] = tensors[key].index_select(dim, index)
        for key, dim in sg.consumers:
            for tensors in (state, mask, dense):
                if tensors is not None and key in tensors:
                    tensors[key] = tensors[key].index_select(dim, index)
            if rescale:
                scale = (1.0 / copies[index]).to(state[key].dtype)
                view = [1] * state[key].dim()
                view[dim] = -1
                state[key] = state[key] * scale.view(view)
                if dense is not None and key in dense:
                    dense[key] = dense[key] * scale.view(view).to(dense[key].dtype)
        if permute_replicas:
            seen: set[int] = set()
            for j, u in enumerate(units):
                if u in seen:
                    for key, dim in sg.producers:
                        if key in mask:
                            row = mask[key].select(dim, j)
                            perm = torch.randperm(row.numel(), generator=g)
                            new = row.reshape(-1)[perm].reshape(row.shape)
                            row.copy_(new)
                            state[key].select(dim, j).copy_(dense[key].select(dim, j) * new.to(dense[key].dtype))
                seen.add(u)
    for key, value in expected.items():
        if key not in state or state[key].shape != value.shape:
            raise PlanError(f"{target_model}: {key} does not take the transformed tensor "
                            f"({tuple(state[key].shape) if key in state else 'none'} for {tuple(value.shape)})")
    provenance = {
        "method": METHOD,
        "description": f"{ticket.model} -> {target_model} along the width "
                       f"({'rescaled ' if rescale else ''}replicas{', permuted masks' if permute_replicas else ''})",
        "source": ticket.model, "width_plan": {k: list(v) for k, v in plan.items()}, "rescale": rescale,
        "permute_replicas": permute_replicas, "seed": seed, "source_provenance": ticket.provenance,
        **{k: ticket.provenance[k] for k in ("seed", "data_seed") if k in ticket.provenance},
    }
    return Ticket(target_model, ticket.dataset, state, {k: v.to(torch.bool) for k, v in mask.items()},
                  ticket.rewind_step, ticket.rewind, dict(ticket.protocol), provenance, list(ticket.warnings), dense)


def transform_width(ticket: Ticket, target_model: str, *, criterion: str = SQUEEZE_CRITERIA[0],
                    rescale: bool = True, permute_replicas: bool = False, seed: int = 0) -> Ticket:
    """Stretch or squeeze `ticket`'s width to `target_model`'s by the strategy of `make_width_plan`."""
    plan = make_width_plan(ticket, target_model, criterion)
    return apply_width_plan(ticket, target_model, plan, rescale=rescale, permute_replicas=permute_replicas, seed=seed)


def format_width_plan(plan: WidthPlan, width: int = 12) -> str:
    """One line per group: its target units' sources (long groups shortened)."""
    lines = []
    for name, units in plan.items():
        shown = ", ".join(map(str, units[:width])) + (f", ... ({len(units)} units)" if len(units) > width else "")
        lines.append(f"  {name}: {shown}")
    return "\n".join(lines)


__all__ = ["METHOD", "SQUEEZE_CRITERIA", "WidthPlan", "apply_width_plan", "format_width_plan", "make_width_plan",
           "transform_width", "unit_scores"]
