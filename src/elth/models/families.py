"""Model families registered by name: elth's own (each registered in its model's file) and users'.

A family is a kind of model whose members differ in depth: names `<kind>_<D>[_<W>]` (D units, width
W). Its builder returns an `ElasticModel` whose `structure()` says which modules are stem, units and
head; every elth command then works with it (IMP, transforms between depths, baselines, LMC).
elth's families register through `register_builtin` with a `ModelFamily` that may also spell its
names its own way (`cifar_vgg_<D>[_fc<K>]`), check them (`parse`), bound their parameters from the
name (`bound`) and say which members exchange tickets (`label`); a user's family takes the defaults.

    from elth.models import ElasticModel, register_family

    register_family("my_net", MyNet, default_width=64,
                    description="my_net_<D>[_<W>] (D blocks, width W, default 64)")

Families outside elth are registered by modules of one's own that elth imports when a name matches
no family yet: see `elth.plugins` (the environment variable `ELTH_PLUGINS`, entry points of group
`elth.plugins`), which also carries this process's families to the processes elth starts.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable

from elth import plugins
from elth.errors import ElthError

_KIND = re.compile(r"[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*")


class FamilyError(ElthError, ValueError):
    """A family that cannot be registered, or a plugin module that cannot be loaded."""


class NameRejected(ValueError):
    """A name of a family's form that the family does not build (the reason, for the one error line)."""


class ModelTooLargeError(ElthError, ValueError):
    """A model name or input that asks for more units or parameters than elth builds."""


#: Largest number of elastic units (hidden layers, residual blocks, fully connected layers) a name
#: may ask for: ten times the deepest network the paper uses, and far more than fits a 2-core CPU.
MAX_UNITS = 1000


def check_units(name: str, units: int) -> None:
    if units > MAX_UNITS:
        raise ModelTooLargeError(f"model {name!r} has {units:,} units (layers or blocks); elth builds models of at "
                                 f"most {MAX_UNITS:,}")


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    depth: int
    width: int = 16
    fc_layers: int = 1

    @property
    def family(self) -> str:
        """Models of one family (and width) share units, so tickets can move between them."""
        return family(self.kind).label(self)


@dataclass(frozen=True)
class ModelFamily:
    kind: str
    build: Callable  # (name, depth, width, input_shape, num_classes) -> ElasticModel
    default_width: int
    description: str
    min_depth: int = 1
    #: elth's own families: their name pattern, name check (name, match -> ModelSpec, raising
    #: NameRejected), builder from the spec, parameter bound from the name, and family label.
    name_pattern: re.Pattern | None = None
    parse_name: Callable | None = None
    make: Callable | None = None  # (spec, name, input_shape, num_classes) -> ElasticModel
    bound: Callable | None = None  # (spec, input_shape, num_classes) -> int
    family_label: Callable | None = None  # (spec) -> str
    #: A network's short name in reports and plots, (spec) -> str ('ResNet-20 (w8)'); None: its name.
    short_label: Callable | None = None
    #: Which of the paper's training recipes (its Table 4) its "paper" preset is: "conv" or "mlp";
    #: None: the paper has none (a user's family trains by the "short" preset unless told otherwise).
    recipe: str | None = None
    #: The paper's rewinding point on small images (ImageNet runs rewind to 5ep whatever the family).
    rewind: str = "1000it"
    builtin: bool = False

    @property
    def pattern(self) -> re.Pattern:
        return self.name_pattern or re.compile(rf"{re.escape(self.kind)}_([0-9]+)(?:_([0-9]+))?")

    def parse(self, name: str, m: re.Match) -> ModelSpec:
        """The spec of a name this family's pattern matched; NameRejected if the family lacks it."""
        if self.parse_name is not None:
            return self.parse_name(name, m)
        depth, width = int(m.group(1)), int(m.group(2)) if m.group(2) else None
        if depth < self.min_depth:
            raise NameRejected(f"a {self.kind} has at least {self.min_depth} unit(s)")
        if width is not None and width < 1:
            raise NameRejected("the width must be positive")
        check_units(name, depth)
        return ModelSpec(self.kind, depth, width=width or self.default_width)

    def short_name(self, spec: ModelSpec, name: str) -> str:
        return self.short_label(spec) if self.short_label is not None else name

    def label(self, spec: ModelSpec) -> str:
        return self.family_label(spec) if self.family_label is not None else f"{self.kind} (width {spec.width})"


_FAMILIES: dict[str, ModelFamily] = {}
#: Kinds of elth's own families: no user's family may take one.
_reserved: set[str] = set()


def register_builtin(family: ModelFamily) -> ModelFamily:
    """Register one of elth's own families (from its model's file)."""
    family = dataclasses.replace(family, builtin=True)
    _reserved.add(family.kind)
    _FAMILIES[family.kind] = family
    return family


def register_family(kind: str, build: Callable, *, default_width: int, description: str = "",
                    min_depth: int = 1, replace: bool = False) -> ModelFamily:
    """Make names `<kind>_<D>[_<W>]` build `build(name, D, W, input_shape, num_classes)`.

    `kind`: lowercase words joined by `_` (no part may be a number, so `<kind>_<D>` reads one way).
    `replace`: allow registering the kind again (e.g. when a module is reloaded).
    """
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise FamilyError(f"a family's kind is lowercase words joined by '_' (e.g. 'my_vit'), not {kind!r}")
    if kind in _reserved:
        raise FamilyError(f"{kind!r} is one of elth's own families ({', '.join(sorted(_reserved))})")
    if not callable(build):
        raise FamilyError(f"family {kind!r}: its builder must be callable, got {type(build).__name__}")
    if isinstance(default_width, bool) or not isinstance(default_width, int) or default_width < 1:
        raise FamilyError(f"family {kind!r}: default_width must be a positive integer, got {default_width!r}")
    if isinstance(min_depth, bool) or not isinstance(min_depth, int) or min_depth < 1:
        raise FamilyError(f"family {kind!r}: min_depth must be a positive integer, got {min_depth!r}")
    if kind in _FAMILIES and not replace and _FAMILIES[kind].build is not build:
        raise FamilyError(f"a family {kind!r} is registered already (pass replace=True to register it again)")
    family = ModelFamily(kind, build, default_width,
                         description or f"{kind}_<D>[_<W>] (D units, width W, default {default_width})", min_depth)
    _FAMILIES[kind] = family
    return family


def unregister_family(kind: str) -> None:
    _FAMILIES.pop(kind, None)


def registered() -> list[ModelFamily]:
    """Every family: elth's own first, then users' in the order they were registered."""
    return sorted(_FAMILIES.values(), key=lambda f: not f.builtin)


def family(kind: str) -> ModelFamily:
    """The registered family of `kind` (a kind `parse_model_name` returned)."""
    return _FAMILIES[kind]


def match(name: str) -> tuple[ModelFamily, re.Match] | None:
    """(family, the match of its name pattern) of a name of a registered family, loading plugins on a miss."""
    found = _match(name)
    if found is None and plugins.load():
        found = _match(name)
    return found


def _match(name: str) -> tuple[ModelFamily, re.Match] | None:
    # the longest kind first: 'my_vit' before 'my'
    for family in sorted(_FAMILIES.values(), key=lambda f: -len(f.kind)):
        m = family.pattern.fullmatch(name)
        if m:
            return family, m
    return None


def builders() -> list[Callable]:
    """The builders of users' families (`plugins.propagate` carries their modules to other processes)."""
    return [f.build for f in _FAMILIES.values() if not f.builtin]


def conv_net_bound(widest: int, layers: int, input_shape: tuple[int, ...], num_classes: int) -> int:
    """An upper bound of a conv net's parameters that pools globally before its head: `layers`
    weight layers of at most a 3x3 conv and a BN at the widest channel count, a 7x7 stem, a head."""
    return layers * (9 * widest * widest + 4 * widest) + 49 * input_shape[0] * widest + (widest + 1) * num_classes
