"""`elth` command line: thin subcommands over the Python API.

Each subcommand lives in `elth.commands.<module>` and defines `add_arguments(parser)`,
`run(args) -> int` and optionally `DESCRIPTION`; its one-line help is in `COMMANDS` below.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from elth.errors import ElthError

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `elth` parser; the arguments of `command` only (the others are listed by name and help)."""
    parser = argparse.ArgumentParser(
        prog="elth",
        description="Elastic lottery tickets: find a winning ticket once per model family by IMP, "
        "then stretch or squeeze it to other depths (and datasets); compare with pruning and dynamic "
        "sparse training baselines; run the paper's experiments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    try:
        # Commands that train run through `_launch` (commands.common.run_on_ranks: --nproc, torchrun ranks).
        launch = getattr(args, "_launch", None)
        code = launch(args, argv) if launch is not None else args._run(args)
        return int(code or 0)
    except ElthError as e:
        print(f"elth {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into a command that stopped reading (e.g. `| head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"elth {args.command}: interrupted (finished work is kept; run again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
