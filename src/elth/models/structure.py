"""The elastic structure of a model: stem -> stages of units -> head.

Every model in elth describes itself as module-name prefixes. A *unit* is the smallest piece an
Elastic Ticket Transformation copies (a residual block, a conv+BN layer, a linear layer); unit 0 of
each stage is its *transition* (it changes resolution or width and is never replicated elsewhere).
All parameter and buffer names of the model belong to exactly one of stem, a unit, or head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ElasticStructure:
    stem: tuple[str, ...]
    stages: tuple[tuple[str, ...], ...]
    head: tuple[str, ...]

    @property
    def stage_lengths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)

    def unit(self, stage: int, index: int) -> str:
        return self.stages[stage][index]

    def keys_of(self, prefix: str, keys) -> list[str]:
        """State-dict keys that live under module `prefix` (in model order)."""
        p = prefix + "."
        return [k for k in keys if k.startswith(p)]

    def unit_keys(self, state: dict[str, torch.Tensor], stage: int, index: int) -> list[str]:
        return self.keys_of(self.stages[stage][index], state.keys())

    def part_of(self, key: str) -> tuple[str, int | None, int | None]:
        """Where a state-dict key lives: ("stem"|"head", None, None) or ("unit", stage, index)."""
        for p in self.stem:
            if key.startswith(p + "."):
                return ("stem", None, None)
        for p in self.head:
            if key.startswith(p + "."):
                return ("head", None, None)
        for s, units in enumerate(self.stages):
            for u, p in enumerate(units):
                if key.startswith(p + "."):
                    return ("unit", s, u)
        raise KeyError(f"{key!r} belongs to no part of the elastic structure")

    def relative(self, key: str) -> str:
        """A unit key relative to its unit prefix ('layer2.3.conv1.weight' -> 'conv1.weight')."""
        _, s, u = self.part_of(key)
        if s is None:  # stem or head
            return key
        return key[len(self.stages[s][u]) + 1 :]


@dataclass(frozen=True)
class WidthGroup:
    """One set of coupled units along a model's width (a layer's neurons, a stage's channels): the
    tensors whose `dim` indexes those units, as producers (a layer's outputs: weight rows, bias,
    BatchNorm) and consumers (the next layers' inputs). A width plan maps every target unit of the
    group to a source unit (`elth.elastic.width`)."""

    name: str
    producers: tuple[tuple[str, int], ...]
    consumers: tuple[tuple[str, int], ...]
