"""CIFAR ResNets (He et al. 2016, Section 4.2) as in the paper's framework: ResNet-(6n+2)."""
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

KIND = "cifar_resnet"
#: The width (channels of the first stage) of a name without one: the paper's.
DEFAULT_WIDTH = 16


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(ElasticModel):
    def __init__(self, name: str, depth: int, width: int, input_shape, num_classes: int):
        super().__init__(name, input_shape, num_classes)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth, self.width, self.blocks_per_stage = depth, width, n
        self.conv = nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        c_in = width
        for s, c_out in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for u in range(n):
                stride = 2 if (s > 0 and u == 0) else 1
                blocks.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(4 * width, num_classes)
        init_weights(self)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)

    def width_groups(self) -> tuple[WidthGroup, ...]:
        """Per stage, the channels of its residual stream (the stem's or the transition's shortcut,
        every block's second conv and BN; read by the blocks' first convs, the next stage's
        transition and the classifier); per block, its inner channels (first conv and BN; read by
        the second conv). Identity shortcuts tie a stage's blocks to one stream."""
        n, groups = self.blocks_per_stage, []
        for s in (1, 2, 3):
            stream_in = [("conv.weight", 0), *_bn("bn")] if s == 1 else \
                [(f"layer{s}.0.shortcut.0.weight", 0), *_bn(f"layer{s}.0.shortcut.1")]
            producers = stream_in + [p for u in range(n) for p in ((f"layer{s}.{u}.conv2.weight", 0),
                                                                   *_bn(f"layer{s}.{u}.bn2"))]
            readers = [(f"layer{s}.{u}.conv1.weight", 1) for u in range(0 if s == 1 else 1, n)]
            readers += ([(f"layer{s + 1}.0.conv1.weight", 1), (f"layer{s + 1}.0.shortcut.0.weight", 1)] if s < 3
                        else [("fc.weight", 1)])
            groups.append(WidthGroup(f"layer{s}", tuple(producers), tuple(readers)))
            for u in range(n):
                block = f"layer{s}.{u}"
                groups.append(WidthGroup(f"{block}.conv1", ((f"{block}.conv1.weight", 0), *_bn(f"{block}.bn1")),
                                         ((f"{block}.conv2.weight", 1),)))
        return tuple(groups)

    def structure(self) -> ElasticStructure:
        n = self.blocks_per_stage
        return ElasticStructure(
            stem=("conv", "bn"),
            stages=tuple(tuple(f"layer{s}.{u}" for u in range(n)) for s in (1, 2, 3)),
            head=("fc",),
        )


def _bn(prefix: str) -> tuple[tuple[str, int], ...]:
    """A BatchNorm's per-channel tensors (its step count is not per channel)."""
    return tuple((f"{prefix}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var"))


def _parse(name: str, m) -> ModelSpec:
    depth = int(m.group(1))
    if depth < 8 or (depth - 2) % 6:
        raise NameRejected(f"a CIFAR ResNet's depth is 6n+2 (8, 14, 20, 32, ...), not {depth}")
    width = int(m.group(2)) if m.group(2) else DEFAULT_WIDTH
    if width < 1:
        raise NameRejected("the width must be positive")
    check_units(name, 3 * (depth - 2) // 6)
    return ModelSpec(KIND, depth, width=width)


FAMILY = register_builtin(ModelFamily(
    KIND, build=None, default_width=DEFAULT_WIDTH,
    description="cifar_resnet_<D>[_<W>] (D = 6n+2: 8, 14, 20, 32, 44, 56, 110, ...; width W, default 16)",
    name_pattern=re.compile(r"cifar_resnet_([0-9]+)(?:_([0-9]+))?"), parse_name=_parse,
    make=lambda spec, name, shape, classes: CifarResNet(name, spec.depth, spec.width, shape, classes),
    bound=lambda spec, shape, classes: conv_net_bound(4 * spec.width, 3 * (spec.depth - 2) // 6 * 2 + 4, shape, classes),
    family_label=lambda spec: f"{KIND} (width {spec.width})",
    short_label=lambda spec: f"ResNet-{spec.depth}" + (f" (w{spec.width})" if spec.width != DEFAULT_WIDTH else ""),
    recipe="conv",
))
