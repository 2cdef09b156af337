"""CIFAR VGGs as in the paper's framework: conv3x3(+bias)+BN+ReLU units in five stages."""
from __future__ import annotations

import re

import torch.nn.functional as F
from torch import nn

from elth.models.base import ElasticModel
from elth.models.families import (
    ModelFamily,
    ModelSpec,
    NameRejected,
    check_units,
    conv_net_bound,
    register_builtin,
)
from elth.models.init import init_weights
from elth.models.structure import ElasticStructure

KIND = "cifar_vgg"

LAYOUTS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)
FC_WIDTH = 512


class ConvUnit(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=True)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class LinearUnit(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x):
        return F.relu(self.linear(x))


class CifarVGG(ElasticModel):
    """VGG-D; with `fc_layers` = K > 1, K-1 hidden linear layers of width 512 precede the output.

    Between stages a 2x2 max-pool (ceil mode, so small inputs such as 8x8 still work; identical to
    the usual floor mode on 32x32); a global average pool feeds the head.
    """

    prune_output_layer = False

    def __init__(self, name: str, depth: int, fc_layers: int, input_shape, num_classes: int):
        super().__init__(name, input_shape, num_classes)
        if depth not in LAYOUTS:
            raise ValueError(f"CIFAR VGG depth must be one of {sorted(LAYOUTS)}, got {depth}")
        if fc_layers < 1:
            raise ValueError(f"a VGG needs at least one fully connected layer, got {fc_layers}")
        self.depth, self.layout, self.fc_layers = depth, LAYOUTS[depth], fc_layers
        c_in = input_shape[0]
        for s, (n, c_out) in enumerate(zip(self.layout, WIDTHS)):
            units = []
            for _ in range(n):
                units.append(ConvUnit(c_in, c_out))
                c_in = c_out
            setattr(self, f"layer{s + 1}", nn.Sequential(*units))
        self.classifier = nn.Sequential(
            *[LinearUnit(c_in if i == 0 else FC_WIDTH, FC_WIDTH) for i in range(fc_layers - 1)]
        )
        self.fc = nn.Linear(FC_WIDTH if fc_layers > 1 else c_in, num_classes)
        init_weights(self)

    def forward(self, x):
        for s in range(5):
            if s:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = getattr(self, f"layer{s + 1}")(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(self.classifier(x))

    def structure(self) -> ElasticStructure:
        stages = [tuple(f"layer{s + 1}.{u}" for u in range(n)) for s, n in enumerate(self.layout)]
        if self.fc_layers > 1:
            stages.append(tuple(f"classifier.{i}" for i in range(self.fc_layers - 1)))
        return ElasticStructure(stem=(), stages=tuple(stages), head=("fc",))


def _parse(name: str, m) -> ModelSpec:
    depth = int(m.group(1))
    if depth not in LAYOUTS:
        raise NameRejected(f"CIFAR VGG depths are {sorted(LAYOUTS)}")
    fc = int(m.group(2)) if m.group(2) else 1
    if fc < 1:
        raise NameRejected("a VGG needs at least one fully connected layer")
    check_units(name, fc)
    return ModelSpec(KIND, depth, width=64, fc_layers=fc)


FAMILY = register_builtin(ModelFamily(
    KIND, build=None, default_width=64,
    description="cifar_vgg_<D>[_fc<K>] (D in 11, 13, 16, 19; K fully connected layers, default 1)",
    name_pattern=re.compile(r"cifar_vgg_([0-9]+)(?:_fc([0-9]+))?"), parse_name=_parse,
    make=lambda spec, name, shape, classes: CifarVGG(name, spec.depth, spec.fc_layers, shape, classes),
    bound=lambda spec, shape, classes: conv_net_bound(max(512, FC_WIDTH), spec.depth + spec.fc_layers, shape, classes),
    # members with FC layers to replicate exchange tickets among themselves, the others among themselves
    family_label=lambda spec: f"{KIND} with fully connected layers" if spec.fc_layers > 1 else KIND,
    short_label=lambda spec: f"VGG-{spec.depth}" + (f"-{spec.fc_layers}" if spec.fc_layers > 1 else ""),
    recipe="conv", rewind="200it",
))
