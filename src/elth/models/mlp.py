"""The paper's MLP-n: input -> n hidden layers of width 300 -> 100 -> classes (Appendix C)."""
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
from elth.models.structure import ElasticStructure

HIDDEN, BOTTLENECK = 300, 100
KIND = "mlp"


class MLP(ElasticModel):
    prune_output_layer = False
    is_conv = False

    def __init__(self, name: str, n_hidden: int, input_shape, num_classes: int):
        super().__init__(name, input_shape, num_classes)
        if n_hidden < 1:
            raise ValueError(f"an MLP needs at least one hidden layer of width 300, got {n_hidden}")
        self.n_hidden = n_hidden
        d_in = math.prod(input_shape)
        self.hidden = nn.ModuleList(
            nn.Linear(d_in if i == 0 else HIDDEN, HIDDEN) for i in range(n_hidden)
        )
        self.bottleneck = nn.Linear(HIDDEN, BOTTLENECK)
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


def _parse(name: str, m) -> ModelSpec:
    depth = int(m.group(1))
    if depth < 1:
        raise NameRejected("an MLP needs at least one hidden layer")
    check_units(name, depth)
    return ModelSpec(KIND, depth, width=HIDDEN)


def _bound(spec: ModelSpec, shape, classes: int) -> int:
    """Exact: the input layer, the hidden layers of 300, the layer to 100, the output layer."""
    return (math.prod(shape) + 1) * HIDDEN + (spec.depth - 1) * (HIDDEN + 1) * HIDDEN + (HIDDEN + 1) * BOTTLENECK + (BOTTLENECK + 1) * classes


FAMILY = register_builtin(ModelFamily(
    KIND, build=None, default_width=HIDDEN, description="mlp_<n> (n hidden layers of width 300, then 100)",
    name_pattern=re.compile(r"mlp_([0-9]+)"), parse_name=_parse,
    make=lambda spec, name, shape, classes: MLP(name, spec.depth, shape, classes),
    bound=_bound, family_label=lambda spec: KIND, short_label=lambda spec: f"MLP-{spec.depth}",
    recipe="mlp", rewind="0",
))
