"""The paper's MLP-n: input -> n hidden layers of width 300 -> 100 -> classes (Appendix C);
`mlp_<n>_<W>`: hidden layers of width W (beyond the paper: its width is an elastic axis too)."""
from __future__ import annotations

import math
import re

import torch.nn.functional as F
from torch import nn

from elth.models.base import ElasticModel
from elth.models.families import (
    ModelFamily,
    ModelSpec,
    NameRejected,
    check_units,
    register_builtin,
)
from elth.models.init import init_weights
from elth.models.structure import ElasticStructure, WidthGroup

HIDDEN, BOTTLENECK = 300, 100
KIND = "mlp"


class MLP(ElasticModel):
    prune_output_layer = False
    is_conv = False

    def __init__(self, name: str, n_hidden: int, input_shape, num_classes: int, width: int = HIDDEN):
        super().__init__(name, input_shape, num_classes)
        if n_hidden < 1:
            raise ValueError(f"an MLP needs at least one hidden layer of width {width}, got {n_hidden}")
        self.n_hidden = n_hidden
        d_in = math.prod(input_shape)
        self.hidden = nn.ModuleList(
            nn.Linear(d_in if i == 0 else width, width) for i in range(n_hidden)
        )
        self.bottleneck = nn.Linear(width, BOTTLENECK)
        self.fc = nn.Linear(BOTTLENECK, num_classes)
        init_weights(self)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.fc(F.relu(self.bottleneck(x)))

    def structure(self) -> ElasticStructure:
        return ElasticStructure(
            stem=(),
            stages=(tuple(f"hidden.{i}" for i in range(self.n_hidden)),),
            head=("bottleneck", "fc"),
        )

    def width_groups(self) -> tuple[WidthGroup, ...]:
        """Each hidden layer's units: its output rows (weight, bias) and the next layer's input columns."""
        after = [f"hidden.{i + 1}" for i in range(self.n_hidden - 1)] + ["bottleneck"]
        return tuple(
            WidthGroup(f"hidden.{i}", producers=((f"hidden.{i}.weight", 0), (f"hidden.{i}.bias", 0)),
                       consumers=((f"{nxt}.weight", 1),))
            for i, nxt in enumerate(after)
        )


def _parse(name: str, m) -> ModelSpec:
    depth = int(m.group(1))
    width = int(m.group(2)) if m.group(2) else HIDDEN
    if depth < 1:
        raise NameRejected("an MLP needs at least one hidden layer")
    if width < 1:
        raise NameRejected("the width must be positive")
    check_units(name, depth)
    return ModelSpec(KIND, depth, width=width)


def _bound(spec: ModelSpec, shape, classes: int) -> int:
    """Exact: the input layer, the hidden layers of W, the layer to 100, the output layer."""
    w = spec.width
    return (math.prod(shape) + 1) * w + (spec.depth - 1) * (w + 1) * w + (w + 1) * BOTTLENECK + (BOTTLENECK + 1) * classes


FAMILY = register_builtin(ModelFamily(
    KIND, build=None, default_width=HIDDEN,
    description=f"mlp_<n>[_<W>] (n hidden layers of width W, default {HIDDEN}, then {BOTTLENECK})",
    name_pattern=re.compile(r"mlp_([0-9]+)(?:_([0-9]+))?"), parse_name=_parse,
    make=lambda spec, name, shape, classes: MLP(name, spec.depth, shape, classes, spec.width),
    bound=_bound, family_label=lambda spec: KIND if spec.width == HIDDEN else f"{KIND} (width {spec.width})",
    short_label=lambda spec: f"MLP-{spec.depth}" + (f" (w{spec.width})" if spec.width != HIDDEN else ""),
    recipe="mlp", rewind="0",
))
