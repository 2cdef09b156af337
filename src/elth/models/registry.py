"""Model names -> models. Names: cifar_resnet_<D>[_<W>], imagenet_resnet_<D>, cifar_vgg_<D>[_fc<K>], mlp_<n>,
and `<kind>_<D>[_<W>]` of the families registered in `elth.models.families` (vit_<D>[_<W>] among them)."""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch

from elth import plugins
from elth.errors import ElthError
from elth.limits import check_seed
from elth.models import families
from elth.models.base import ElasticModel
from elth.models.cifar_resnet import CifarResNet
from elth.models.cifar_vgg import FC_WIDTH as VGG_FC_WIDTH, LAYOUTS as VGG_LAYOUTS, CifarVGG
from elth.models.imagenet_resnet import LAYOUTS as IMAGENET_LAYOUTS, ImageNetResNet
from elth.models.mlp import MLP
from elth.models.vit import DEFAULT_WIDTH as VIT_WIDTH, build_vit

NAME_FORMS = (
    "cifar_resnet_<D>[_<W>] (D = 6n+2: 8, 14, 20, 32, 44, 56, 110, ...; width W, default 16)",
    "imagenet_resnet_<D> (D in 18, 26, 34)",
    "cifar_vgg_<D>[_fc<K>] (D in 11, 13, 16, 19; K fully connected layers, default 1)",
    "mlp_<n> (n hidden layers of width 300, then 100)",
)


#: Largest number of elastic units (hidden layers, residual blocks, fully connected layers) a name
#: may ask for: ten times the deepest network the paper uses, and far more than fits a 2-core CPU.
MAX_UNITS = 1000
#: Largest number of parameters `build_model` builds (4 GB of fp32 weights; the paper's largest
#: network, ImageNet ResNet-34, has 21.8 million). Counted on the meta device before any memory is used.
MAX_PARAMETERS = 1_000_000_000


class UnknownModelError(ElthError, ValueError):
    pass


class ModelTooLargeError(ElthError, ValueError):
    """A model name or input that asks for more units or parameters than elth builds."""


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    depth: int
    width: int = 16
    fc_layers: int = 1

    @property
    def family(self) -> str:
        """Models of one family (and width) share units, so tickets can move between them."""
        if self.kind == "cifar_resnet":
            return f"cifar_resnet (width {self.width})"
        if self.kind == "cifar_vgg":
            return "cifar_vgg with fully connected layers" if self.fc_layers > 1 else "cifar_vgg"
        if self.kind in BUILTIN_KINDS:
            return self.kind
        return f"{self.kind} (width {self.width})"


_PATTERNS = (
    (re.compile(r"cifar_resnet_([0-9]+)(?:_([0-9]+))?"), "cifar_resnet"),
    (re.compile(r"imagenet_resnet_([0-9]+)"), "imagenet_resnet"),
    (re.compile(r"cifar_vgg_([0-9]+)(?:_fc([0-9]+))?"), "cifar_vgg"),
    (re.compile(r"mlp_([0-9]+)"), "mlp"),
)
BUILTIN_KINDS = tuple(kind for _, kind in _PATTERNS)
families.reserve(BUILTIN_KINDS)


def _unknown(name: str, why: str) -> UnknownModelError:
    forms = "\n  ".join(NAME_FORMS + tuple(f.description for f in families.registered()))
    return UnknownModelError(f"unknown model {name!r}: {why}. Model names have the forms:\n  {forms}\n"
                             f"(networks of your own: `elth.models.register_family`, in {plugins.HOW_TO_ADD})")


def parse_model_name(name: str) -> ModelSpec:
    for pattern, kind in _PATTERNS:
        m = pattern.fullmatch(name)
        if not m:
            continue
        depth = int(m.group(1))
        if kind == "cifar_resnet":
            if depth < 8 or (depth - 2) % 6:
                raise _unknown(name, f"a CIFAR ResNet's depth is 6n+2 (8, 14, 20, 32, ...), not {depth}")
            width = int(m.group(2)) if m.group(2) else 16
            if width < 1:
                raise _unknown(name, "the width must be positive")
            _check_units(name, 3 * (depth - 2) // 6)
            return ModelSpec(kind, depth, width=width)
        if kind == "imagenet_resnet":
            if depth not in IMAGENET_LAYOUTS:
                raise _unknown(name, f"ImageNet ResNet depths are {sorted(IMAGENET_LAYOUTS)}")
            return ModelSpec(kind, depth, width=64)
        if kind == "cifar_vgg":
            if depth not in VGG_LAYOUTS:
                raise _unknown(name, f"CIFAR VGG depths are {sorted(VGG_LAYOUTS)}")
            fc = int(m.group(2)) if m.group(2) else 1
            if fc < 1:
                raise _unknown(name, "a VGG needs at least one fully connected layer")
            _check_units(name, fc)
            return ModelSpec(kind, depth, width=64, fc_layers=fc)
        if depth < 1:
            raise _unknown(name, "an MLP needs at least one hidden layer")
        _check_units(name, depth)
        return ModelSpec(kind, depth, width=300)
    found = families.match(name)
    if found is not None:
        family, depth, width = found
        if depth < family.min_depth:
            raise _unknown(name, f"a {family.kind} has at least {family.min_depth} unit(s)")
        if width is not None and width < 1:
            raise _unknown(name, "the width must be positive")
        _check_units(name, depth)
        return ModelSpec(family.kind, depth, width=width or family.default_width)
    raise _unknown(name, "no model family matches")


def _check_units(name: str, units: int) -> None:
    if units > MAX_UNITS:
        raise ModelTooLargeError(f"model {name!r} has {units:,} units (layers or blocks); elth builds models of at "
                                 f"most {MAX_UNITS:,}")


def parameter_bound(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> int | None:
    """An upper bound of the parameters of a model (from its name alone: no tensor is made); None
    for registered families, which are counted on the meta device.

    MLPs: exact. Conv nets pool globally before their head, so only the input channels matter:
    at most (weight layers) x (3x3 conv and BN at the widest channel count) + a 7x7 stem + heads.
    """
    if spec.kind not in BUILTIN_KINDS:
        return None
    if spec.kind == "mlp":
        d_in = math.prod(input_shape)
        return (d_in + 1) * 300 + (spec.depth - 1) * 301 * 300 + 301 * 100 + 101 * num_classes
    if spec.kind == "cifar_resnet":
        widest, layers = 4 * spec.width, 3 * (spec.depth - 2) // 6 * 2 + 4
    elif spec.kind == "imagenet_resnet":
        widest, layers = 512, 2 * sum(IMAGENET_LAYOUTS[spec.depth]) + 4
    else:
        widest, layers = max(512, VGG_FC_WIDTH), spec.depth + spec.fc_layers
    return layers * (9 * widest * widest + 4 * widest) + 49 * input_shape[0] * widest + (widest + 1) * num_classes


@functools.lru_cache(maxsize=64)
def parameter_count(name: str, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Parameters of `name` for this input and class count, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        model = _make(parse_model_name(name), name, input_shape, num_classes)
    return sum(p.numel() for p in model.parameters())


def _make(spec: ModelSpec, name: str, shape: tuple[int, ...], num_classes: int) -> ElasticModel:
    if spec.kind == "cifar_resnet":
        return CifarResNet(name, spec.depth, spec.width, shape, num_classes)
    if spec.kind == "imagenet_resnet":
        return ImageNetResNet(name, spec.depth, shape, num_classes)
    if spec.kind == "cifar_vgg":
        return CifarVGG(name, spec.depth, spec.fc_layers, shape, num_classes)
    if spec.kind == "mlp":
        return MLP(name, spec.depth, shape, num_classes)
    model = families.family(spec.kind).build(name, spec.depth, spec.width, shape, num_classes)
    if not isinstance(model, ElasticModel) or model.name != name:
        raise families.FamilyError(f"family {spec.kind!r}: its builder must return an ElasticModel named {name!r}, "
                                   f"got {type(model).__name__}" + (f" named {model.name!r}"
                                                                    if isinstance(model, ElasticModel) else ""))
    return model


def build_model(
    name: str,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    seed: int | None = 0,
) -> ElasticModel:
    """Build a freshly initialised model. `seed` makes the initialisation reproducible (None: global RNG)."""
    spec = parse_model_name(name)
    shape = tuple(int(d) for d in input_shape)
    if seed is not None:
        check_seed(seed)
    # The exact count (a meta-device build, slow the first time) only when the cheap bound is too high.
    bound = parameter_bound(spec, shape, int(num_classes))
    if (bound is None or bound > MAX_PARAMETERS) and \
            (count := parameter_count(name, shape, int(num_classes))) > MAX_PARAMETERS:
        raise ModelTooLargeError(f"model {name!r} on inputs of shape {'x'.join(map(str, shape))} has {count:,} "
                                 f"parameters; elth builds models of at most {MAX_PARAMETERS:,}")
    if seed is None:
        return _make(spec, name, shape, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _make(spec, name, shape, num_classes)


families.register_family("vit", build_vit, default_width=VIT_WIDTH,
                         description=f"vit_<D>[_<W>] (a Vision Transformer of D encoder blocks, width W, "
                                     f"default {VIT_WIDTH})")
