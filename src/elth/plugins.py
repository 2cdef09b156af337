"""Modules of a user's own that register model families (`elth.models.register_family`) and
datasets (`elth.data.register_dataset`).

They are named by the environment variable `ELTH_PLUGINS` (comma-separated module names, found on
the Python path or in the working directory, or paths of `.py` files) and by installed packages'
entry points of group `elth.plugins` (a module, or a function called without arguments), and
imported once: by the `elth` command at its start (so a name that cannot be imported is an error
before any work), from Python when a model or dataset name matches nothing registered yet.
Processes elth starts (ranks, workers, SLURM jobs) inherit the variable, so they know the same
names; before it starts them, `propagate` adds the modules that define this process's registered
builders and loaders (from Python, e.g. a script that runs an experiment) to it.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
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
    entries = _named_modules()
    for entry in entries:
        _import(entry)
    # Processes elth starts may work elsewhere: they get files by their absolute paths.
    absolute = [str(Path(e).expanduser().resolve()) if _is_path(e) else e for e in entries]
    if absolute != entries:
        os.environ[PLUGINS_ENV] = ",".join(absolute)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            if callable(loaded):
                loaded()
        except Exception as e:  # noqa: BLE001
            raise PluginError(f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r} failed: "
                              f"{type(e).__name__}: {e}") from None
    return True


def _is_path(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def load_entry(entry: str, source: str = PLUGINS_ENV) -> None:
    """Import one plugin named in `source` (`ELTH_PLUGINS`, a spec file's key): a module name, or
    the path of a `.py` file; processes elth starts import it too."""
    _import(entry, source)
    if _is_path(entry):
        entry = str(Path(entry).expanduser().resolve())
    named = _named_modules()
    if entry not in named:
        os.environ[PLUGINS_ENV] = ",".join([*named, entry])


def _import(entry: str, source: str = PLUGINS_ENV) -> None:
    """Import one entry of `ELTH_PLUGINS` (or of `source`): a module name, or the path of a `.py` file."""
    try:
        if _is_path(entry):
            _import_file(entry, source)
        elif importlib.util.find_spec(entry) is None:
            _import_from_working_directory(entry, source)
        else:
            importlib.import_module(entry)
    except PluginError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the user's module is reported as one error
        raise PluginError(f"{source}: cannot import {entry!r} ({type(e).__name__}: {e})") from None


def _import_file(entry: str, source: str = PLUGINS_ENV) -> None:
    path = Path(entry).expanduser().resolve()
    if not path.is_file():
        raise PluginError(f"{source}: {entry!r}: no such file")
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{source}: {entry!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _import_from_working_directory(entry: str, source: str = PLUGINS_ENV) -> None:
    """A module that is not on the Python path but in the working directory (as `python -m` would find
    it); processes elth starts find it there too (the directory joins their PYTHONPATH)."""
    here = os.getcwd()
    if importlib.machinery.PathFinder.find_spec(entry.split(".")[0], [here]) is None:
        raise PluginError(f"{source}: no module named {entry!r} on the Python path or in the working directory "
                          f"{here} (a file elsewhere can be named by its path, e.g. /path/to/{entry}.py)")
    sys.path.append(here)
    importlib.import_module(entry)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, here])


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
