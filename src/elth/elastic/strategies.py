"""Strategies that produce ETT plans (paper Sections 3.1, 3.2 and 4.1); `apply_plan` applies them.

Units are numbered 0..n-1 within a stage; unit 0 is the transition and always maps to itself.

Stretch (n -> N > n units): replicate the chosen units, by default every replicable unit 1..n-1
(the paper's rule: more unique units, fewer times each). The N - n copies are shared as evenly as
possible, earlier units taking one more when the count does not divide. A stage of one unit can
only replicate its transition, so its default is unit 0 (valid when its shapes match the others').

- ``appending``: the copies follow, as whole rounds in unit order, right after the last chosen
  unit: 3 -> 5 gives [0, 1, 2, 1, 2]; 3 -> 9 gives [0, 1, 2, 1, 2, 1, 2, 1, 2].
- ``interpolation``: each copy right after its source unit: 3 -> 5 gives [0, 1, 1, 2, 2].

Squeeze (n -> N < n units): drop n - N units, never the transition.

- ``consecutive``: drop the latest units, keep [0, 1, ..., N-1] (the inverse of appending).
- ``interval``: split units 1..n-1 into N-1 runs of consecutive units, as even as possible with
  earlier runs one longer, and keep the first unit of each run (the inverse of interpolation):
  5 -> 3 keeps [0, 1, 3] (drops 2 and 4), 9 -> 5 keeps [0, 1, 3, 5, 7], 7 -> 5 keeps [0, 1, 3, 5, 6].
- ``drop``: drop exactly the given units.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from elth.elastic.plan import Plan, PlanError

#: How a stretch places the copies (the paper's appending and interpolation), the first the default.
APPENDING, INTERPOLATION = ORDERS = ("appending", "interpolation")
#: How a squeeze chooses the units it keeps, the first the default.
CONSECUTIVE, INTERVAL = SQUEEZE_MODES = ("consecutive", "interval")


def _unit_set(units: Iterable[int], n_source: int, what: str) -> tuple[int, ...]:
    chosen = tuple(int(u) for u in units)
    if not chosen:
        raise PlanError(f"no units to {what} were given")
    if len(set(chosen)) != len(chosen):
        raise PlanError(f"the units to {what} ({_join(chosen)}) name a unit twice")
    missing = [u for u in chosen if not 0 <= u < n_source]
    if missing:
        raise PlanError(f"cannot {what} unit {missing[0]}: the source has units 0-{n_source - 1}")
    return tuple(sorted(chosen))


def _join(units: Sequence[int]) -> str:
    return ",".join(str(u) for u in units)


def stretch(
    n_source: int, n_target: int, *, order: str = "appending", units: Iterable[int] | None = None,
) -> tuple[int, ...]:
    """Source unit for each of `n_target` units, replicating `units` (default: every replicable unit)."""
    if order not in ORDERS:
        raise PlanError(f"unknown stretch order {order!r}; choose one of {', '.join(ORDERS)}")
    if n_target < n_source:
        raise PlanError(f"cannot stretch {n_source} units into fewer ({n_target}); squeeze instead")
    if n_target == n_source:
        return tuple(range(n_source))
    if units is None:
        chosen = tuple(range(1, n_source)) if n_source > 1 else (0,)
    else:
        chosen = _unit_set(units, n_source, "replicate")
    q, r = divmod(n_target - n_source, len(chosen))
    copies = {u: q + (1 if k < r else 0) for k, u in enumerate(chosen)}
    if order == "interpolation":
        out: list[int] = []
        for u in range(n_source):
            out += [u] * (1 + copies.get(u, 0))
        return tuple(out)
    last = chosen[-1]
    rounds = [u for k in range(max(copies.values())) for u in chosen if copies[u] > k]
    return tuple(range(last + 1)) + tuple(rounds) + tuple(range(last + 1, n_source))


def squeeze(
    n_source: int, n_target: int, *, mode: str = "consecutive", drop: Iterable[int] | None = None,
) -> tuple[int, ...]:
    """Source unit for each of `n_target` units after dropping `n_source - n_target` units."""
    if mode not in SQUEEZE_MODES:
        raise PlanError(f"unknown squeeze mode {mode!r}; choose one of {', '.join(SQUEEZE_MODES)}")
    if n_target < 1:
        raise PlanError(f"a stage needs at least its transition unit, cannot squeeze it to {n_target} units")
    if n_target > n_source:
        raise PlanError(f"cannot squeeze {n_source} units into more ({n_target}); stretch instead")
    n_drop = n_source - n_target
    if drop is not None:
        dropped = _unit_set(drop, n_source, "drop")
        if 0 in dropped:
            raise PlanError("cannot drop unit 0: it is the stage's transition")
        if len(dropped) != n_drop:
            raise PlanError(
                f"squeezing {n_source} units into {n_target} drops {n_drop}, "
                f"but {len(dropped)} units were given to drop ({_join(dropped)})"
            )
        return tuple(u for u in range(n_source) if u not in dropped)
    if mode == "consecutive" or n_drop == 0:
        return tuple(range(n_target))
    # interval: runs over units 1..n_source-1, as even as possible, earlier runs one longer.
    k = n_target - 1
    q, r = divmod(n_source - 1, k) if k else (0, 0)
    return (0,) + tuple(1 + i * q + min(i, r) for i in range(k))


def make_plan(
    source_lengths: Sequence[int],
    target_lengths: Sequence[int],
    *,
    order: str = "appending",
    squeeze_mode: str = "consecutive",
    units: Iterable[int] | None = None,
    drop: Iterable[int] | None = None,
) -> Plan:
    """Per stage: identity when the lengths agree, else `stretch` or `squeeze`.

    `units` applies to every stretched stage and `drop` to every squeezed one (stages of different
    lengths need an explicit plan for finer control).
    """
    if len(source_lengths) != len(target_lengths):
        raise PlanError(
            f"the source has {len(source_lengths)} stages and the target {len(target_lengths)}; "
            "ETTs never change the number of stages"
        )
    units = None if units is None else tuple(units)
    drop = None if drop is None else tuple(drop)
    grows = any(t > s for s, t in zip(source_lengths, target_lengths))
    shrinks = any(t < s for s, t in zip(source_lengths, target_lengths))
    if units is not None and not grows:
        raise PlanError("units to replicate were given, but no stage of the target is longer than the source's")
    if drop is not None and not shrinks:
        raise PlanError("units to drop were given, but no stage of the target is shorter than the source's")
    if order not in ORDERS:
        raise PlanError(f"unknown stretch order {order!r}; choose one of {', '.join(ORDERS)}")
    if squeeze_mode not in SQUEEZE_MODES:
        raise PlanError(f"unknown squeeze mode {squeeze_mode!r}; choose one of {', '.join(SQUEEZE_MODES)}")
    plan = []
    for s, (n, m) in enumerate(zip(source_lengths, target_lengths)):
        try:
            if m > n:
                plan.append(stretch(n, m, order=order, units=units))
            elif m < n:
                plan.append(squeeze(n, m, mode=squeeze_mode, drop=drop))
            else:
                plan.append(tuple(range(n)))
        except PlanError as e:
            raise PlanError(f"stage {s + 1}: {e}") from None
    return tuple(plan)
