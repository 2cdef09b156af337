"""ImageNet ResNets with BasicBlocks; parameter names match torchvision's resnet18/resnet34."""
from __future__ import annotations

import re

from torch import nn

from elth.models.base import ElasticModel
from elth.models.families import (
    ModelFamily,
    ModelSpec,
    NameRejected,
    conv_net_bound,
    register_builtin,
)
from elth.models.init import init_weights
from elth.models.structure import ElasticStructure

KIND = "imagenet_resnet"

LAYOUTS = {18: (2, 2, 2, 2), 26: (2, 3, 4, 3), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ImageNetResNet(ElasticModel):
    def __init__(self, name: str, depth: int, input_shape, num_classes: int):
        super().__init__(name, input_shape, num_classes)
        if depth not in LAYOUTS:
            raise ValueError(f"ImageNet ResNet depth must be one of {sorted(LAYOUTS)}, got {depth}")
        self.depth, self.layout = depth, LAYOUTS[depth]
        self.conv1 = nn.Conv2d(input_shape[0], 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        for s, (n, c_out) in enumerate(zip(self.layout, (64, 128, 256, 512))):
            blocks = []
            for u in range(n):
                blocks.append(BasicBlock(c_in, c_out, 2 if (s > 0 and u == 0) else 1))
                c_in = c_out
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))

    def structure(self) -> ElasticStructure:
        return ElasticStructure(
            stem=("conv1", "bn1"),
            stages=tuple(
                tuple(f"layer{s + 1}.{u}" for u in range(n)) for s, n in enumerate(self.layout)
            ),
            head=("fc",),
        )


def _parse(name: str, m) -> ModelSpec:
    depth = int(m.group(1))
    if depth not in LAYOUTS:
        raise NameRejected(f"ImageNet ResNet depths are {sorted(LAYOUTS)}")
    return ModelSpec(KIND, depth, width=64)


FAMILY = register_builtin(ModelFamily(
    KIND, build=None, default_width=64, description="imagenet_resnet_<D> (D in 18, 26, 34)",
    name_pattern=re.compile(r"imagenet_resnet_([0-9]+)"), parse_name=_parse,
    make=lambda spec, name, shape, classes: ImageNetResNet(name, spec.depth, shape, classes),
    bound=lambda spec, shape, classes: conv_net_bound(512, 2 * sum(LAYOUTS[spec.depth]) + 4, shape, classes),
    family_label=lambda spec: KIND, short_label=lambda spec: f"ResNet-{spec.depth}",
    recipe="conv",
))
