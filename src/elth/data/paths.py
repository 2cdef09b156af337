"""Where dataset files are looked for.

Order: the explicit `data_dir` (the CLI's `--data-dir`), then `$ELTH_DATA` (several directories may
be joined with `os.pathsep`), then `~/.elth/data`, then `./data`, then places where a system package
installs a dataset (Debian's `dataset-fashion-mnist` puts Fashion-MNIST in
/usr/share/datasets/fashion-mnist). Each base directory is tried directly and through sub-folders
named after the dataset (`cifar10/`, `fashion-mnist/`, ...). The first directory holding every
expected file wins.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from elth.data.errors import DatasetNotFoundError

__all__ = [
    "DatasetNotFoundError",
    "ENV_VAR",
    "SUBFOLDERS",
    "WELL_KNOWN",
    "Wanted",
    "base_dirs",
    "candidate_dirs",
    "find_files",
]

ENV_VAR = "ELTH_DATA"

#: sub-folders of a base directory tried for each dataset, after the base directory itself
SUBFOLDERS: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar10", "cifar-10", "cifar-10-batches-py", "cifar10/cifar-10-batches-py"),
    "svhn": ("svhn", "SVHN"),
    "mnist": ("mnist", "MNIST", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw"),
    "imagenet": ("imagenet", "ImageNet", "ILSVRC2012"),
}

#: system-wide places where a packaged copy of a dataset lives (tried last)
WELL_KNOWN: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}


@dataclass(frozen=True)
class Wanted:
    """One expected file (or folder): its accepted names, first preferred, and how to show it."""

    key: str
    names: tuple[str, ...]
    label: str = ""

    @property
    def shown(self) -> str:
        return self.label or self.names[0]


def base_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The base directories in resolution order, each with where it came from."""
    bases: list[tuple[Path, str]] = []
    if data_dir is not None and str(data_dir) != "":
        bases.append((Path(data_dir).expanduser(), "--data-dir"))
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            bases.append((Path(part.strip()).expanduser(), f"${ENV_VAR}"))
    bases.append((Path.home() / ".elth" / "data", "default"))
    bases.append((Path.cwd() / "data", "default"))
    return bases


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every directory tried for dataset `name`, in order, without repeats."""
    seen: set[str] = set()
    out: list[Path] = []

    def add(p: Path) -> None:
        key = os.path.normpath(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(p)

    for base, _ in base_dirs(data_dir):
        add(base)
        for sub in SUBFOLDERS.get(name, ()):
            add(base / sub)
    for place in WELL_KNOWN.get(name, ()):
        add(Path(place))
    return out


def _match(directory: Path, wanted: Sequence[Wanted]) -> tuple[dict[str, Path], list[Wanted]]:
    found: dict[str, Path] = {}
    missing: list[Wanted] = []
    for w in wanted:
        hit = next((directory / n for n in w.names if (directory / n).exists()), None)
        if hit is None:
            missing.append(w)
        else:
            found[w.key] = hit
    return found, missing


def find_files(
    name: str,
    wanted: Sequence[Wanted],
    data_dir: str | os.PathLike | None = None,
    hint: str = "",
) -> dict[str, Path]:
    """Paths of all `wanted` files, from the first candidate directory that holds every one of them.

    Raises `DatasetNotFoundError` naming the expected files and every place looked in.
    """
    partial: list[tuple[Path, list[Wanted]]] = []
    for directory in candidate_dirs(name, data_dir):
        if not directory.is_dir():
            continue
        found, missing = _match(directory, wanted)
        if not missing:
            return found
        if found:
            partial.append((directory, missing))
    raise DatasetNotFoundError(_not_found_message(name, wanted, data_dir, hint, partial))


def _not_found_message(
    name: str,
    wanted: Sequence[Wanted],
    data_dir: str | os.PathLike | None,
    hint: str,
    partial: list[tuple[Path, list[Wanted]]],
) -> str:
    files = ", ".join(w.shown for w in wanted)
    places = []
    for base, origin in base_dirs(data_dir):
        places.append(f"{base} ({origin})" if origin != "default" else str(base))
    subs = SUBFOLDERS.get(name, ())
    where = ", ".join(places)
    if subs:
        where += ", each directly and in a sub-folder " + _or(f"{s}/" for s in subs)
    if WELL_KNOWN.get(name):
        where += ", then " + ", ".join(WELL_KNOWN[name])
    msg = f"dataset {name!r} not found: expected {files}"
    if hint:
        msg += f" ({hint})"
    msg += f" in one directory; looked in {where}"
    for directory, missing in partial:
        msg += f"; {directory} lacks {', '.join(w.shown for w in missing)}"
    msg += (
        ". Put the files in one of those places or point elth at their directory with "
        f"--data-dir DIR or the {ENV_VAR} environment variable."
    )
    return msg


def _or(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
