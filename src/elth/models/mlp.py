"""The paper's MLP-n: input -> n hidden layers of width 300 -> 100 -> classes (Appendix C)."""
from __future__ import annotations

import math

from torch import nn
import torch.nn.functional as F

from elth.models.base import ElasticModel
from elth.models.init import init_weights
from elth.models.structure import ElasticStructure

HIDDEN, BOTTLENECK = 300, 100


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
