"""Model families registered by name: users' own networks (and elth's ViT) next to the built-ins.

A family is a kind of model whose members differ in depth: names `<kind>_<D>[_<W>]` (D units, width
W). Its builder returns an `ElasticModel` whose `structure()` says which modules are stem, units and
head; every elth command then works with it (IMP, transforms between depths, baselines, LMC).

    from elth.models import ElasticModel, register_family

    register_family("my_net", MyNet, default_width=64,
                    description="my_net_<D>[_<W>] (D blocks, width W, default 64)")

Families outside elth are registered by modules of one's own that elth imports when a name matches
no family yet: see `elth.plugins` (the environment variable `ELTH_PLUGINS`, entry points of group
`elth.plugins`), which also carries this process's families to the processes elth starts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from elth import plugins
from elth.errors import ElthError

_KIND = re.compile(r"[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*")


class FamilyError(ElthError, ValueError):
    """A family that cannot be registered, or a plugin module that cannot be loaded."""


@dataclass(frozen=True)
class ModelFamily:
    kind: str
    build: Callable  # (name, depth, width, input_shape, num_classes) -> ElasticModel
    default_width: int
    description: str
    min_depth: int = 1

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(rf"{re.escape(self.kind)}_([0-9]+)(?:_([0-9]+))?")


_FAMILIES: dict[str, ModelFamily] = {}
#: Kinds of elth's own name forms (`registry` reserves them): no registered family may take one.
_reserved: set[str] = set()


def reserve(kinds) -> None:
    _reserved.update(kinds)


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
    return list(_FAMILIES.values())


def family(kind: str) -> ModelFamily:
    """The registered family of `kind` (a kind `parse_model_name` returned)."""
    return _FAMILIES[kind]


def match(name: str) -> tuple[ModelFamily, int, int | None] | None:
    """(family, depth, width or None) of a name of a registered family, loading plugins on a miss."""
    found = _match(name)
    if found is None and plugins.load():
        found = _match(name)
    return found


def _match(name: str) -> tuple[ModelFamily, int, int | None] | None:
    # the longest kind first: 'my_vit' before 'my'
    for family in sorted(_FAMILIES.values(), key=lambda f: -len(f.kind)):
        m = family.pattern.fullmatch(name)
        if m:
            return family, int(m.group(1)), int(m.group(2)) if m.group(2) else None
    return None


def builders() -> list[Callable]:
    """The registered families' builders (`plugins.propagate` carries their modules to other processes)."""
    return [f.build for f in _FAMILIES.values()]
