"""`elth` command line: thin subcommands over the Python API.

Each subcommand lives in `elth.commands.<module>` and defines `add_arguments(parser)`,
`run(args) -> int` and optionally `DESCRIPTION`; its one-line help is in `COMMANDS` below.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import importlib
import importlib.metadata
import os
import re
import signal
import sys
import threading
import traceback

from elth import __version__, plugins
from elth.console import check_settings
from elth.errors import ElthError, Terminated, raise_terminated

#: subcommand -> (module in elth.commands, one-line help). A command's module is imported only when
#: that command runs or shows its help, so `elth --help` loads no torch (seconds on a cold machine).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "train",
        "train a dense model on a dataset with a preset protocol (resumes an interrupted run)",
    ),
    "imp": (
        "imp",
        "find winning tickets by Iterative Magnitude Pruning with rewinding (one ticket per level)",
    ),
    "inspect": ("inspect", "show a ticket's model, dataset, provenance and per-layer sparsity"),
    "train-ticket": (
        "train_ticket",
        "train a ticket from its rewind point to the end with its mask fixed, and report test accuracy",
    ),
    "transform": (
        "transform",
        "stretch or squeeze a ticket to another depth of its model family (and/or move it to another dataset)",
    ),
    "prune": (
        "prune",
        "prune a network by a baseline (magnitude, SNIP, GraSP, SynFlow, random, reinit, snip-extra)",
    ),
    "dst": ("dst", "train a sparse network from scratch by dynamic sparse training (RigL, DPF)"),
    "lmc": (
        "lmc",
        "train two copies of each ticket with different data seeds and measure their linear mode connectivity",
    ),
    "import-open-lth": (
        "import_open_lth",
        "import the levels of an open_lth lottery run as elth tickets (to stretch, squeeze or train them)",
    ),
    "export-open-lth": (
        "export_open_lth",
        "write tickets (the levels of one IMP run) as an open_lth lottery run, for open_lth to train",
    ),
    "experiment": (
        "experiment",
        "run a paper experiment (IMP, ETTs, baselines over sparsities and seeds) and report it",
    ),
    "report": (
        "report",
        "write report.md and its figure from an experiment's results (results.jsonl or results.csv)",
    ),
    "demo": (
        "demo",
        "a few minutes' demonstration: one IMP run's tickets stretched and squeezed to other depths",
    ),
}


def _torch_version() -> str:
    """The installed torch's version, read without importing torch (which takes seconds)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, `elth <cmd>: error: ...`, exit status 2.

    `argv`: the command line, so that a required option reported missing can name the misspelt
    option the user most likely meant it to be."""

    argv: list[str] = []  # set on a command's parser by `build_parser`

    def error(self, message: str):
        if message.startswith("the following arguments are required"):
            unknown = [a for a in self.argv if a.startswith("--") and not self._known(a)]
            if unknown:
                message += f" ({unknown[0]} is not an option of {self.prog}{self.likely(unknown[0])})"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _options(self) -> list[str]:
        return [o for a in self._actions for o in a.option_strings]

    def _known(self, arg: str) -> bool:
        name = arg.split("=", 1)[0]
        return any(o.startswith(name) for o in self._options())  # argparse takes unique prefixes too

    def likely(self, arg: str) -> str:
        """'; did you mean --x?' for the option closest to `arg`, or nothing."""
        close = difflib.get_close_matches(arg.split("=", 1)[0], self._options(), n=1, cutoff=0.7)
        return f"; did you mean {close[0]}?" if close and arg.startswith("--") else ""


def build_parser(command: str | None = None, argv: list[str] = ()) -> argparse.ArgumentParser:
    """The `elth` parser; the arguments of `command` only (the others are listed by name and help)."""
    parser = _Parser(
        prog="elth",
        description="Elastic lottery tickets: find a winning ticket once per model family by IMP, "
        "then stretch or squeeze it to other depths (and datasets); compare with pruning and dynamic "
        "sparse training baselines; run the paper's experiments.",
    )
    parser.add_argument("--version", action="version", version=f"elth {__version__} (torch {_torch_version()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help)
            continue
        # The one function-local import of elth by design: a command's module (and torch with it)
        # loads only when that command is used.
        mod = importlib.import_module(f"elth.commands.{module}")
        p = sub.add_parser(
            name, help=help, description=getattr(mod, "DESCRIPTION", help),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.argv = list(argv)
        p.set_defaults(_run=mod.run)
        parser.set_defaults(_parser=p)
    return parser


#: A value that argparse would take for an option because it starts with '-' (e.g. `-5it`).
_DASH_VALUE = re.compile(r"^-[0-9]")


def _attach_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--opt -5it` as `--opt=-5it` for the options of `parser` that take one value, so that the
    value reaches its own check (argparse would say only "expected one argument")."""
    takes_value = {o for a in parser._actions if isinstance(a, (argparse._StoreAction, argparse._AppendAction))
                   and a.nargs is None for o in a.option_strings}
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in takes_value and _DASH_VALUE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def parse(argv: list[str], command: str | None) -> argparse.Namespace:
    """The command line's arguments; an argument the command does not know is that command's error,
    with the option it most likely meant."""
    parser = build_parser(command, argv)
    sub = parser.get_default("_parser")
    if sub is not None:
        argv = _attach_dash_values(sub, argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub: _Parser = args._parser
        sub.error(f"unrecognized arguments: {' '.join(unknown)}{sub.likely(unknown[0])}")
    return args


#: What an OSError's errno means for a path the user gave.
_OS_HINTS = {
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "it is a directory",
    errno.EEXIST: "it already exists",
    errno.ENAMETOOLONG: "a name in the path is too long",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOENT: "no such file or directory",
}


def describe_os_error(e: OSError) -> str:
    """One line for an operating-system error: the path(s) involved and what went wrong."""
    why = _OS_HINTS.get(e.errno, e.strerror or str(e))
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {why}" if paths else why


def one_line(message: str) -> str:
    """A multi-line message as one line: items after a line ending in ':' follow it, others join with '; '."""
    out = ""
    for line in (part.strip() for part in message.splitlines()):
        if line:
            out += line if not out else (" " if out.endswith(":") else "; ") + line
    return out


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block SIGTERM raises `Terminated` (where it would have killed the process at once)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = parse(argv, command)
    with _sigterm_as_interrupt():
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    prefix = f"elth {args.command}"
    try:
        # Settings from the environment, checked before any work: progress display, own modules.
        check_settings()
        plugins.load()
        # Commands that train run through `_launch` (commands.common.run_on_ranks: --nproc, torchrun ranks).
        launch = getattr(args, "_launch", None)
        code = launch(args, argv) if launch is not None else args._run(args)
        return int(code or 0)
    except ElthError as e:
        print(f"{prefix}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into a command that stopped reading (e.g. `| head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:
        how = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"{prefix}: {how} (finished work is kept; run again to resume)", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    except OSError as e:  # a path that cannot be written or read, a full disk: the user's to fix
        print(f"{prefix}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print(f"{prefix}: internal error: this is a bug in elth {__version__}, not a problem with your input; "
              "please report it with the command line and the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
