"""Model names -> models, through the families registered in `elth.models.families`: elth's own
(cifar_resnet_<D>[_<W>], imagenet_resnet_<D>, cifar_vgg_<D>[_fc<K>], mlp_<n>, vit_<D>[_<W>], each
registered in its model's file) and users' (`<kind>_<D>[_<W>]`). Nothing here knows a family."""
from __future__ import annotations

import functools

import torch

from elth import plugins
from elth.errors import ElthError
from elth.limits import check_seed
from elth.models import families
from elth.models.base import ElasticModel
from elth.models.families import MAX_UNITS, ModelSpec, ModelTooLargeError, NameRejected

# elth's own families, each registered in its model's file (in this order in help texts)
from elth.models import cifar_resnet, imagenet_resnet, cifar_vgg, mlp, vit  # noqa: E402,F401  isort: skip

#: Largest number of parameters `build_model` builds (4 GB of fp32 weights; the paper's largest
#: network, ImageNet ResNet-34, has 21.8 million). Counted on the meta device before any memory is used.
MAX_PARAMETERS = 1_000_000_000

__all__ = ["MAX_PARAMETERS", "MAX_UNITS", "ModelSpec", "ModelTooLargeError", "UnknownModelError", "build_model",
           "name_forms", "parse_model_name"]


class UnknownModelError(ElthError, ValueError):
    pass


def name_forms() -> tuple[str, ...]:
    """The name forms of every registered family, elth's own first."""
    return tuple(f.description for f in families.registered())


def _unknown(name: str, why: str) -> UnknownModelError:
    forms = "\n  ".join(name_forms())
    return UnknownModelError(f"unknown model {name!r}: {why}. Model names have the forms:\n  {forms}\n"
                             f"(networks of your own: `elth.models.register_family`, in {plugins.HOW_TO_ADD})")


def parse_model_name(name: str) -> ModelSpec:
    found = families.match(name)
    if found is None:
        raise _unknown(name, "no model family matches")
    family, m = found
    try:
        return family.parse(name, m)
    except NameRejected as e:
        raise _unknown(name, str(e)) from None


def parameter_bound(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> int | None:
    """An upper bound of the parameters of a model from its name alone (no tensor is made), where its
    family gives one; None for the others, which are counted on the meta device."""
    bound = families.family(spec.kind).bound
    return None if bound is None else bound(spec, input_shape, num_classes)


@functools.lru_cache(maxsize=64)
def parameter_count(name: str, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Parameters of `name` for this input and class count, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        model = _make(parse_model_name(name), name, input_shape, num_classes)
    return sum(p.numel() for p in model.parameters())


def _make(spec: ModelSpec, name: str, shape: tuple[int, ...], num_classes: int) -> ElasticModel:
    family = families.family(spec.kind)
    if family.make is not None:
        return family.make(spec, name, shape, num_classes)
    model = family.build(name, spec.depth, spec.width, shape, num_classes)
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

