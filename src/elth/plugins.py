"""Modules of a user's own that register model families (`elth.models.register_family`) and
datasets (`elth.data.register_dataset`).

They are named by the environment variable `ELTH_PLUGINS` (comma-separated module names) and by
installed packages' entry points of group `elth.plugins` (a module, or a function called without
arguments), and imported once, when a model or dataset name matches nothing registered yet.
Processes elth starts (ranks, workers, SLURM jobs) inherit the variable, so they know the same
names; before it starts them, `propagate` adds the modules that define this process's registered
builders and loaders (from Python, e.g. a script that runs an experiment) to it.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from typing import Callable, Iterable

from elth.errors import ElthError

PLUGINS_ENV = "ELTH_PLUGINS"
ENTRY_POINT_GROUP = "elth.plugins"
#: How an unknown model or dataset name says where names of one's own come from.
HOW_TO_ADD = f"a module named in {PLUGINS_ENV} or an entry point of group {ENTRY_POINT_GROUP!r}"

_loaded = False


class PluginError(ElthError, ValueError):
    """A plugin module or entry point that cannot be loaded."""


def _named_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def load() -> bool:
    """Import the modules of `ELTH_PLUGINS` and the entry points (once); whether this call did."""
    global _loaded
    if _loaded:
        return False
    _loaded = True
    for module in _named_modules():
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any failure of the user's module is reported as one error
            raise PluginError(f"{PLUGINS_ENV}: cannot import module {module!r} ({type(e).__name__}: {e})") from None
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            if callable(loaded):
                loaded()
        except Exception as e:  # noqa: BLE001
            raise PluginError(f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r} failed: "
                              f"{type(e).__name__}: {e}") from None
    return True


def propagate(registered: Iterable[Callable]) -> list[str]:
    """Add the modules defining the `registered` builders and loaders to `ELTH_PLUGINS` (in
    `os.environ`), so that processes started from here register them too; the modules added.

    Those defined in a script run as `__main__` are left out: spawned workers import the script
    again (registering them), other processes cannot (define them in an importable module).
    """
    wanted = [getattr(f, "__module__", None) for f in registered]
    wanted = [m for m in dict.fromkeys(wanted) if m and not m.startswith(("elth.", "__main__", "__mp_main__"))]
    have = _named_modules()
    added = [m for m in wanted if m not in have]
    if added:
        os.environ[PLUGINS_ENV] = ",".join(have + added)
    return added
