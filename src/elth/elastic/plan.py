"""ETT plans: for every stage, the source unit that fills each target unit, in order.

A plan for ResNet-20 -> ResNet-32 by appending is ``((0, 1, 2, 1, 2),) * 3``: target unit 3 of every
stage takes the weights, mask and BN state of source unit 1. Unit 0 of a stage is its transition and
always comes from source unit 0; the stem and the head are copied unchanged.

Text syntax (``parse_plan`` / ``format_plan``): unit indices separated by commas, stages separated
by semicolons, spaces ignored. A single list applies to every stage:

    "0,1,2,1,2"                      the same list for each stage
    "0,1,2,1,2;0,1,1,2,2;0,1,2,3,4"  one list per stage, in stage order
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass

import torch

from elth.errors import ElthError
from elth.models import ElasticModel, ElasticStructure, build_model, parse_model_name

Plan = tuple[tuple[int, ...], ...]

STAGE_SEPARATOR = ";"
UNIT_SEPARATOR = ","


class PlanError(ElthError, ValueError):
    """A plan (or a request for one) that cannot turn the source ticket into the target model."""


def parse_plan(text: str, n_stages: int) -> Plan:
    """Read the text syntax above; one list is repeated for all `n_stages` stages."""
    text = text.strip()
    if not text:
        raise PlanError("the plan is empty; write unit indices like '0,1,2,1,2' (stages separated by ';')")
    stages = []
    for s, part in enumerate(text.split(STAGE_SEPARATOR), start=1):
        entries = [e.strip() for e in part.split(UNIT_SEPARATOR)]
        if any(not e for e in entries):
            raise PlanError(f"stage {s} of the plan {text!r} has an empty entry; write unit indices like '0,1,2,1,2'")
        try:
            units = tuple(int(e) for e in entries)
        except ValueError:
            raise PlanError(f"stage {s} of the plan {text!r} holds something other than unit indices") from None
        if any(u < 0 for u in units):
            raise PlanError(f"stage {s} of the plan {text!r} has a negative unit index")
        stages.append(units)
    if len(stages) == 1:
        return tuple(stages) * n_stages
    if len(stages) != n_stages:
        raise PlanError(
            f"the plan has {len(stages)} stage lists but the model has {n_stages} stages; "
            "give one list for all stages or one per stage"
        )
    return tuple(stages)


def format_plan(plan: Plan) -> str:
    """The text form of `plan`, one list per stage (``parse_plan`` reads it back unchanged)."""
    return STAGE_SEPARATOR.join(UNIT_SEPARATOR.join(str(u) for u in stage) for stage in plan)


def skeleton_model(name: str, input_shape=(3, 32, 32), num_classes: int = 10) -> ElasticModel:
    """The model built without memory (meta tensors): names, shapes and structure, no values."""
    with torch.device("meta"):
        return build_model(name, input_shape, num_classes, seed=None)


@dataclass(frozen=True)
class ModelView:
    """What plans need to know of a model: its identity, structure, tensor shapes and prunable weights."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    structure: ElasticStructure
    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # state-dict order
    prunable: tuple[str, ...]

    @classmethod
    def of(cls, model: "ElasticModel | str | ModelView") -> "ModelView":
        """A view of a built model, or of a model name (built with the default input shape)."""
        if isinstance(model, ModelView):
            return model
        if isinstance(model, str):
            return model_view(model)
        return cls(
            model.name, tuple(model.input_shape), model.num_classes, model.structure(),
            tuple((k, tuple(v.shape)) for k, v in model.state_dict().items()), tuple(model.prunable_names()),
        )

    def unit_shapes(self, stage: int, unit: int) -> dict[str, tuple[int, ...]]:
        prefix = self.structure.stages[stage][unit] + "."
        return {k[len(prefix):]: v for k, v in self.shapes if k.startswith(prefix)}

    def fixed_shapes(self) -> dict[str, tuple[int, ...]]:
        """Stem and head tensors (copied unchanged)."""
        return {k: v for k, v in self.shapes if self.structure.part_of(k)[0] != "unit"}


@functools.lru_cache(maxsize=64)
def model_view(name: str, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10) -> ModelView:
    """`ModelView` of a model name for a dataset shape (cached: building even a meta model takes time)."""
    return ModelView.of(skeleton_model(name, tuple(input_shape), num_classes))


def check_compatible(
    source_model: ElasticModel | str | ModelView, target_model: ElasticModel | str | ModelView
) -> None:
    """Same family and width, same input shape and class count; raises PlanError otherwise."""
    src, tgt = ModelView.of(source_model), ModelView.of(target_model)
    _check_compatible(src, tgt)


def _check_compatible(src: ModelView, tgt: ModelView) -> None:
    src_family, tgt_family = parse_model_name(src.name).family, parse_model_name(tgt.name).family
    if src_family != tgt_family:
        raise PlanError(
            f"cannot transform a {src.name} ticket into {tgt.name}: tickets move only within one family "
            f"and width ({src_family} vs {tgt_family})"
        )
    if src.input_shape != tgt.input_shape:
        raise PlanError(
            f"the source takes inputs of shape {src.input_shape} but the target {tgt.input_shape}; "
            "a ticket keeps its dataset"
        )
    if src.num_classes != tgt.num_classes:
        raise PlanError(
            f"the source has {src.num_classes} classes but the target {tgt.num_classes}; a ticket keeps its dataset"
        )
    if src.fixed_shapes() != tgt.fixed_shapes():
        raise PlanError(f"the stem or head of {src.name} and {tgt.name} differ, so they cannot be copied")


def _shape_difference(src: dict, tgt: dict) -> str:
    only_src = sorted(set(src) - set(tgt))
    if only_src:
        return f"{only_src[0]} exists only in the source unit"
    only_tgt = sorted(set(tgt) - set(src))
    if only_tgt:
        return f"{only_tgt[0]} exists only in the target unit"
    k = next(k for k in src if src[k] != tgt[k])
    return f"{k} has shape {src[k]} in the source unit but {tgt[k]} in the target unit"


def validate_plan(
    plan: Plan, source_model: ElasticModel | str | ModelView, target_model: ElasticModel | str | ModelView
) -> None:
    """Raise PlanError unless `plan` fills every unit of `target_model` from a compatible unit of `source_model`.

    Models may be given as built models (their input shape and class count are checked too) or as
    names (built with the default input shape).
    """
    src, tgt = ModelView.of(source_model), ModelView.of(target_model)
    _check_compatible(src, tgt)
    n_src, n_tgt = src.structure.stage_lengths, tgt.structure.stage_lengths
    if not isinstance(plan, (tuple, list)) or not all(isinstance(s, (tuple, list)) for s in plan):
        raise PlanError("a plan is a sequence of stages, each a sequence of source unit indices")
    if len(plan) != len(n_tgt):
        raise PlanError(f"the plan has {len(plan)} stages but {tgt.name} has {len(n_tgt)}")
    for s, stage in enumerate(plan):
        where = f"stage {s + 1} of the plan"
        if len(stage) < n_tgt[s]:
            unfilled = ", ".join(tgt.structure.stages[s][len(stage):])
            raise PlanError(f"{where} fills {len(stage)} of the {n_tgt[s]} target units, leaving {unfilled} unfilled")
        if len(stage) > n_tgt[s]:
            raise PlanError(f"{where} has {len(stage)} entries but {tgt.name} has only {n_tgt[s]} units in that stage")
        for j, i in enumerate(stage):
            if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                raise PlanError(f"{where} holds {i!r}, which is not a unit index")
            i = int(i)
            if not 0 <= i < n_src[s]:
                raise PlanError(
                    f"{where} names source unit {i}, but {src.name} has units 0-{n_src[s] - 1} in that stage"
                )
            if j == 0 and i != 0:
                raise PlanError(
                    f"{where} maps the transition unit {tgt.structure.stages[s][0]} to source unit {i}; "
                    "a transition always comes from source unit 0"
                )
            a, b = src.unit_shapes(s, i), tgt.unit_shapes(s, j)
            if a != b and i == 0 and j > 0 and n_src[s] == 1:
                raise PlanError(
                    f"{src.name} has no unit to replicate in stage {s + 1}: its only unit there, "
                    f"{src.structure.stages[s][0]}, is the stage's transition (it takes the stage's input), and "
                    f"{tgt.name}'s further units have other shapes ({_shape_difference(a, b)}); stretch a ticket of "
                    f"a member with at least two units in that stage")
            if a != b:
                raise PlanError(
                    f"target unit {tgt.structure.stages[s][j]} cannot take source unit "
                    f"{src.structure.stages[s][i]}: {_shape_difference(a, b)}"
                )
