"""The paper's own code's way of writing an ETT (ElasticLTH's `--block_mapping`), read as a plan.

A block-mapping string maps each source unit to the target units it fills: `0:0;1:1,3;2:2,4` puts
source unit 0 in target unit 0, unit 1 in targets 1 and 3, unit 2 in 2 and 4 (ids are local to a
stage). elth's plan is the same map read the other way (per target unit, its source: `0,1,2,1,2`),
so a string is only parsed and turned around; the plan then goes through elth's one routine.

How the authors' code numbers the units, per family (`LAYOUTS`):
- CIFAR ResNets: one map, used for every stage.
- ImageNet ResNets and CIFAR VGGs (one fully connected layer): one map per stage, separated by `|`.
- CIFAR VGGs with several fully connected layers (their VGG-nFC): one map of the hidden FC layers,
  numbered as entries of their `classifier` Sequential (a Linear and a ReLU each: ids 0, 2, 4, ...);
  the conv stages stay as they are.
- MLPs (their LeNet): one map of the `fc_layers` (the hidden layers of 300 and the layer to 100 last:
  ids 0..n), whose last entry stays last.
"""
from __future__ import annotations

from dataclasses import dataclass

from elth.elastic.plan import Plan, PlanError, model_view
from elth.models import parse_model_name

STAGE_MAPS = "|"
PAIRS = ";"


@dataclass(frozen=True)
class MappingLayout:
    """Which of elth's stages a block-mapping string covers, and how it numbers their units."""

    #: One map per stage (`|`-separated), else one map for every stage the string covers.
    per_stage: bool = False
    #: Only the model's fully connected stage (the last), the others unchanged.
    fc_stage_only: bool = False
    #: A unit's id in the string is its index times this (Sequentials that interleave a ReLU).
    id_step: int = 1
    #: The string also numbers the layer after the stage (LeNet's layer to 100), which stays last.
    trailing_layer: bool = False


def _vgg_layout(source: str, target: str) -> MappingLayout:
    with_fc_stage = parse_model_name(source).fc_layers > 1 or parse_model_name(target).fc_layers > 1
    return MappingLayout(fc_stage_only=True, id_step=2) if with_fc_stage else MappingLayout(per_stage=True)


#: model kind -> the layout of its block-mapping strings (a function of source and target names).
LAYOUTS = {
    "cifar_resnet": lambda source, target: MappingLayout(),
    "imagenet_resnet": lambda source, target: MappingLayout(per_stage=True),
    "cifar_vgg": _vgg_layout,
    "mlp": lambda source, target: MappingLayout(trailing_layer=True),
}


def block_mapping_plan(text: str, source: str, target: str) -> Plan:
    """The plan that the block-mapping string `text` describes for a `source` -> `target` transform."""
    kind = parse_model_name(source).kind
    if kind not in LAYOUTS:
        raise PlanError(f"block-mapping strings are the paper's code's convention for CIFAR and ImageNet ResNets, "
                        f"CIFAR VGGs and MLPs, not for {source}; give the plan with --plan")
    layout = LAYOUTS[kind](source, target)
    src, tgt = model_view(source), model_view(target)
    if len(src.structure.stages) != len(tgt.structure.stages) and not layout.fc_stage_only:
        raise PlanError(f"{source} has {len(src.structure.stages)} stages and {target} {len(tgt.structure.stages)}")
    n_src = [len(s) for s in src.structure.stages]
    n_tgt = [len(s) for s in tgt.structure.stages]
    texts = [t.strip() for t in text.split(STAGE_MAPS)]
    if layout.fc_stage_only:
        if len(texts) != 1:
            raise PlanError(f"--block-mapping {text!r}: a VGG with several fully connected layers takes one map of "
                            "its hidden FC layers, without '|'")
        if n_src[:5] != n_tgt[:5]:
            raise PlanError(f"--block-mapping maps only the FC layers, but {source} and {target} differ in their "
                            "conv layers")
        if len(n_src) < 6 or len(n_tgt) < 6:
            raise PlanError(f"--block-mapping {text!r}: {source if len(n_src) < 6 else target} has no hidden FC "
                            "layer to map (one fully connected layer only)")
        conv = tuple(tuple(range(n)) for n in n_src[:5])
        return conv + (_stage_plan(texts[0], n_src[5], n_tgt[5], layout, "the FC layers"),)
    if layout.per_stage:
        if len(texts) != len(n_tgt):
            raise PlanError(f"--block-mapping {text!r}: {target} takes one map per stage ({len(n_tgt)}, "
                            f"separated by '{STAGE_MAPS}'), got {len(texts)}")
    elif len(texts) != 1:
        raise PlanError(f"--block-mapping {text!r}: {target} takes one map for all its stages, without "
                        f"'{STAGE_MAPS}'")
    else:
        texts = texts * len(n_tgt)
    return tuple(_stage_plan(t, n_src[s], n_tgt[s], layout, f"stage {s + 1}") for s, t in enumerate(texts))


def _stage_plan(text: str, n_src: int, n_tgt: int, layout: MappingLayout, where: str) -> tuple[int, ...]:
    """One stage's plan from its map `text` (source id -> target ids)."""
    mapping = _parse(text)
    step = layout.id_step
    # ids as the authors' code numbers them, for the source's and the target's units
    src_ids = {u * step: u for u in range(n_src)}
    tgt_ids = {u * step: u for u in range(n_tgt)}
    if layout.trailing_layer:
        src_last, tgt_last = n_src * step, n_tgt * step
        if mapping.pop(src_last, None) != [tgt_last]:
            raise PlanError(f"--block-mapping {text!r}: layer {src_last} (the source's layer after its hidden "
                            f"layers) must map to layer {tgt_last} (the target's), alone")
    plan: dict[int, int] = {}
    for s, targets in mapping.items():
        if s not in src_ids:
            raise PlanError(f"--block-mapping {text!r}: {where} of the source has no unit {s} "
                            f"(its units: {', '.join(map(str, src_ids))})")
        for t in targets:
            if t not in tgt_ids:
                raise PlanError(f"--block-mapping {text!r}: {where} of the target has no unit {t} "
                                f"(its units: {', '.join(map(str, tgt_ids))})")
            if tgt_ids[t] in plan:
                raise PlanError(f"--block-mapping {text!r}: target unit {t} of {where} is filled twice")
            plan[tgt_ids[t]] = src_ids[s]
    unfilled = [str(t) for t, u in tgt_ids.items() if u not in plan]
    if unfilled:
        raise PlanError(f"--block-mapping {text!r}: target unit(s) {', '.join(unfilled)} of {where} are filled by "
                        "no source unit")
    return tuple(plan[u] for u in range(n_tgt))


def _parse(text: str) -> dict[int, list[int]]:
    """`0:0;1:1,3;2:2,4` -> {0: [0], 1: [1, 3], 2: [2, 4]}."""
    mapping: dict[int, list[int]] = {}
    for pair in text.split(PAIRS):
        source, colon, targets = pair.partition(":")
        try:
            if not colon:
                raise ValueError
            s = _id(source)
            ts = [_id(t) for t in targets.split(",")]
        except ValueError:
            raise PlanError(f"--block-mapping {text!r}: {pair.strip()!r} is not SOURCE:TARGET[,TARGET...] with unit "
                            "numbers, as in 0:0;1:1,2;2:3,4") from None
        if s in mapping:
            raise PlanError(f"--block-mapping {text!r}: source unit {s} is mapped twice")
        mapping[s] = ts
    return mapping


def _id(text: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)
