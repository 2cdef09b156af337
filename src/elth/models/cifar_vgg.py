"""CIFAR VGGs as in the paper's framework: conv3x3(+bias)+BN+ReLU units in five stages.

Names `cifar_vgg_<D>[_<W>][_fc<K>]`: depth D (11, 13, 16, 19), first stage's channels W (default
64: stages of W, 2W, 4W, 8W, 8W channels, hidden linear layers of 8W units), K fully connected
layers. The width is an elastic axis (beyond the paper): every conv layer's channels and every
hidden linear layer's units are a group of coupled units (`width_groups`).
"""
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
from elth.models.structure import ElasticStructure, WidthGroup

KIND = "cifar_vgg"

LAYOUTS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
DEFAULT_WIDTH = 64
#: each stage's channels in units of the first stage's
STAGE_MULTIPLIERS = (1, 2, 4, 8, 8)
#: hidden linear layers' units in units of the first stage's channels (512 at the default width)
FC_MULTIPLIER = 8


def stage_widths(width: int = DEFAULT_WIDTH) -> tuple[int, ...]:
    return tuple(m * width for m in STAGE_MULTIPLIERS)


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
    """VGG-D; with `fc_layers` = K > 1, K-1 hidden linear layers of 8W units (512) precede the output.

    Between stages a 2x2 max-pool (ceil mode, so small inputs such as 8x8 still work; identical to
    the usual floor mode on 32x32); a global average pool feeds the head.
    """

    prune_output_layer = False

    def __init__(self, name: str, depth: int, fc_layers: int, input_shape, num_classes: int,
                 width: int = DEFAULT_WIDTH):
        super().__init__(name, input_shape, num_classes)
        if depth not in LAYOUTS:
            raise ValueError(f"CIFAR VGG depth must be one of {sorted(LAYOUTS)}, got {depth}")
        if fc_layers < 1:
            raise ValueError(f"a VGG needs at least one fully connected layer, got {fc_layers}")
        self.depth, self.layout, self.fc_layers = depth, LAYOUTS[depth], fc_layers
        c_in, fc_width = input_shape[0], FC_MULTIPLIER * width
        for s, (n, c_out) in enumerate(zip(self.layout, stage_widths(width))):
            units = []
            for _ in range(n):
                units.append(ConvUnit(c_in, c_out))
                c_in = c_out
            setattr(self, f"layer{s + 1}", nn.Sequential(*units))
        self.classifier = nn.Sequential(
            *[LinearUnit(c_in if i == 0 else fc_width, fc_width) for i in range(fc_layers - 1)]
        )
        self.fc = nn.Linear(fc_width if fc_layers > 1 else c_in, num_classes)
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

    def width_groups(self) -> tuple[WidthGroup, ...]:
        """Each conv layer's channels (its weight rows, bias and BN; read by the next conv, or by the
        first linear layer after the global pool) and each hidden linear layer's units (read by the
        next linear layer). Max-pools and the global pool act per channel, so nothing else couples them."""
        convs = [f"layer{s + 1}.{u}" for s, n in enumerate(self.layout) for u in range(n)]
        linears = [f"classifier.{i}.linear" for i in range(self.fc_layers - 1)] + ["fc"]
        groups = []
        for i, unit in enumerate(convs):
            reader = f"{convs[i + 1]}.conv.weight" if i + 1 < len(convs) else f"{linears[0]}.weight"
            bn = tuple((f"{unit}.bn.{k}", 0) for k in ("weight", "bias", "running_mean", "running_var"))
            groups.append(WidthGroup(unit, ((f"{unit}.conv.weight", 0), (f"{unit}.conv.bias", 0), *bn),
                                     ((reader, 1),)))
        for layer, reader in zip(linears, linears[1:]):
            groups.append(WidthGroup(layer, ((f"{layer}.weight", 0), (f"{layer}.bias", 0)), ((f"{reader}.weight", 1),)))
        return tuple(groups)


def _parse(name: str, m) -> ModelSpec:
    depth = int(m.group(1))
    if depth not in LAYOUTS:
        raise NameRejected(f"CIFAR VGG depths are {sorted(LAYOUTS)}")
    width = int(m.group(2)) if m.group(2) else DEFAULT_WIDTH
    if width < 1:
        raise NameRejected("the width must be positive")
    fc = int(m.group(3)) if m.group(3) else 1
    if fc < 1:
        raise NameRejected("a VGG needs at least one fully connected layer")
    check_units(name, fc)
    return ModelSpec(KIND, depth, width=width, fc_layers=fc)


def _family_label(spec: ModelSpec) -> str:
    """Members with FC layers to replicate exchange tickets among themselves, the others among
    themselves; each width is a family of its own (the default's label says no width)."""
    label = f"{KIND} with fully connected layers" if spec.fc_layers > 1 else KIND
    return label + (f" (width {spec.width})" if spec.width != DEFAULT_WIDTH else "")


FAMILY = register_builtin(ModelFamily(
    KIND, build=None, default_width=DEFAULT_WIDTH,
    description=f"cifar_vgg_<D>[_<W>][_fc<K>] (D in 11, 13, 16, 19; first stage's channels W, default {DEFAULT_WIDTH}; "
                "K fully connected layers, default 1)",
    name_pattern=re.compile(r"cifar_vgg_([0-9]+)(?:_([0-9]+))?(?:_fc([0-9]+))?"), parse_name=_parse,
    make=lambda spec, name, shape, classes: CifarVGG(name, spec.depth, spec.fc_layers, shape, classes, spec.width),
    bound=lambda spec, shape, classes: conv_net_bound(FC_MULTIPLIER * spec.width, spec.depth + spec.fc_layers, shape,
                                                      classes),
    family_label=_family_label,
    short_label=lambda spec: f"VGG-{spec.depth}" + (f"-{spec.fc_layers}" if spec.fc_layers > 1 else "")
    + (f" (w{spec.width})" if spec.width != DEFAULT_WIDTH else ""),
    recipe="conv", rewind="200it",
))
