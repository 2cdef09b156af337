"""`elth demo`: the paper's idea end to end in a few minutes on a CPU, with no setup."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from elth.commands.common import add_data_dir_argument, check_output_dir
from elth.commands.experiment import execute
from elth.data import load_dataset
from elth.errors import ElthError
from elth.experiments.evidence import plain_summary
from elth.experiments.results import read_results
from elth.experiments.shipped import DEMO
from elth.experiments.verdicts import verdicts_for

DESCRIPTION = """\
Runs IMP with rewinding on MLP-2, squeezes its tickets to MLP-1 and stretches them to MLP-3
(elastic ticket transformations), trains every ticket, and compares them with IMP run on each of
those depths and with SNIP and random tickets of the same sparsity, over three seeds. Prints each
ETT ticket's difference from IMP and from the best baseline, paired seed by seed with a 95%
interval, and says when a difference is within seed noise; writes the report (report.md, with
the verdicts) and its figure.

Data: Fashion-MNIST when its files are installed (e.g. Debian's dataset-fashion-mnist package),
otherwise scikit-learn's built-in 8x8 digits, so it runs on a fresh machine with no download.
Everything is kept in the store (--root): running the demo again reads finished runs back.

examples:
  elth demo
  elth demo --dataset digits --out /tmp/demo
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=("auto", "fashion_mnist", "digits"), default="auto",
                        help="auto (default): Fashion-MNIST when installed, else the built-in digits")
    add_data_dir_argument(parser, "where Fashion-MNIST's files are (default: $ELTH_DATA, then the usual places)")
    parser.add_argument("--root", default="runs", metavar="DIR", help="store of runs (default: ./runs)")
    parser.add_argument("--out", default=str(Path("runs") / "demo"), metavar="DIR",
                        help="where results and report go (default: ./runs/demo)")
    parser.add_argument("--workers", type=int, default=1, metavar="K",
                        help="run independent runs in K local processes (default: 1)")
    parser.add_argument("--threads", type=int, default=1, metavar="T",
                        help="torch threads per worker (default: 1; the demo's small MLPs gain little from "
                        "more, and a single thread never stalls on a busy machine)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-run lines")


def pick_dataset(choice: str, data_dir: str | None) -> str:
    if choice != "auto":
        return choice

    try:
        load_dataset("fashion_mnist", data_dir)
        return "fashion_mnist"
    except ElthError:
        return "digits"


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.root, "--root")
    check_output_dir(args.out, "--out")
    start = time.time()
    dataset = pick_dataset(args.dataset, args.data_dir)
    setups = tuple(dataclasses.replace(s, dataset=dataset) for s in DEMO.setups("cpu"))
    out = Path(args.out)
    print(f"elth demo on {dataset}: IMP on MLP-1..3, MLP-2's tickets transformed to the other depths, "
          f"SNIP and random baselines; store {args.root}, report in {out}", file=sys.stderr)
    command = "elth demo" + (f" --dataset {args.dataset}" if args.dataset != "auto" else "")
    execute(DEMO, "cpu", args, out, setups=setups, command=command)
    lines = ["", "ETT tickets from MLP-2 minus IMP run on the target itself and minus the best baseline, both "
                 "read at the ETT ticket's own sparsity, seed by seed (mean and 95% interval over seeds; "
                 "~: just beyond the other curve's end; n/a: the other curve has no point near that sparsity):"]
    rows = read_results(out)
    lines += plain_summary(rows)
    lines += ["", "The paper's claims at this scale (rule and intervals in the report):"]
    lines += [f"  {v.claim.statement}: {v.outcome} ({v.reason})" for v in verdicts_for("demo", rows, [])]
    lines.append(f"\ndemo finished in {time.time() - start:.0f}s")
    print("\n".join(lines))
    return 0
