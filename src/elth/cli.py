"""`elth` command line: thin subcommands over the Python API.

Each subcommand lives in `elth.commands.<module>` and defines `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from elth.errors import ElthError
from elth.training import distributed

#: subcommand name -> module in elth.commands
COMMANDS = {
    "train": "train",
    "imp": "imp",
    "inspect": "inspect",
    "train-ticket": "train_ticket",
    "transform": "transform",
    "prune": "prune",
    "dst": "dst",
    "lmc": "lmc",
    "experiment": "experiment",
    "report": "report",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elth",
        description="Elastic lottery tickets: find a winning ticket once per model family by IMP, "
        "then stretch or squeeze it to other depths (and datasets); compare with pruning and dynamic "
        "sparse training baselines; run the paper's experiments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"elth.commands.{module}")
        p = sub.add_parser(
            name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "nproc", None) is not None and not distributed.launched_by_torchrun():
            return distributed.launch(args.nproc, distributed.strip_nproc(argv))
        if distributed.launched_by_torchrun():
            _join_ranks(args)
        return int(args._run(args) or 0)
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


def _join_ranks(args: argparse.Namespace) -> None:
    """One rank of a torchrun group: join it, train on this rank's device, print on rank 0 only."""
    device = distributed.init(getattr(args, "device", None), sync_batchnorm=getattr(args, "sync_bn", False))
    if hasattr(args, "device"):
        args.device = str(device)
    if not distributed.is_main():
        sys.stdout = open(os.devnull, "w")


if __name__ == "__main__":
    sys.exit(main())
