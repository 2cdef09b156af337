"""`elth report`: Markdown report and figures from an experiment's results table."""
from __future__ import annotations

import argparse
from pathlib import Path

from elth.errors import ElthError
from elth.experiments.report import report_figures, write_report
from elth.experiments.results import read_results

DESCRIPTION = """\
Read an experiment's tidy results table (DIR/results.jsonl, or results.csv, or a file given
directly) and write report.md and accuracy_vs_sparsity.png next to it (or in --out):

- test accuracy against sparsity per target network, one curve per method, mean and standard
  deviation over seeds; IMP solid black, ETTs from each source solid, pruning baselines dashed,
  the dense network dotted (a bar chart per target when a single sparsity level is compared);
- ETT tickets against IMP and the best baseline read at the ETT ticket's own sparsity;
- the source x target matrix (the layout of the paper's Table 5);
- per-target tables with each ticket's actual sparsity; IMP at every level;
- the compute of each ticket (training steps and FLOPs, IMP rounds included) and the E-LTH saving.

examples:
  elth report runs/experiments/fc_table5-cpu
  elth report results.csv --out /tmp/report
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="DIR",
                        help="an experiment's output directory, or its results.jsonl / results.csv")
    parser.add_argument("--out", metavar="DIR", help="where report.md and the PNG go (default: next to the results)")


def run(args: argparse.Namespace) -> int:
    src = Path(args.results)
    rows = read_results(src)  # a clear error for a missing or malformed table
    if not rows:
        raise ElthError(f"{src}: the results table has no rows")
    results_dir = src if src.is_dir() else src.parent
    out = Path(args.out) if args.out else results_dir
    report = write_report(src, out)
    print(f"report: {report}")

    for figure in report_figures(report):
        print(f"figure: {figure}")
    return 0
