"""`elth report`: Markdown report and figures from an experiment's results table."""
from __future__ import annotations

import argparse
from pathlib import Path

from elth.commands.common import check_output_dir
from elth.errors import ElthError
from elth.experiments.evidence import experiment_dirs, write_verdict_index
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

With --index, DIR is a folder of experiment output directories (such as docs/results): every
report in it is written again, then DIR/README.md with the paper-wide verdict table (each claim of
the paper an experiment tests, its measured effect with a 95% interval over seeds, and the verdict),
every row linked to its report.

examples:
  elth report runs/experiments/fc_table5-cpu
  elth report docs/results --index
  elth report results.csv --out /tmp/report
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="DIR",
                        help="an experiment's output directory, or its results.jsonl / results.csv")
    parser.add_argument("--out", metavar="DIR", help="where report.md and the PNG go (default: next to the results)")
    parser.add_argument("--index", action="store_true",
                        help="DIR holds experiment directories: rewrite each report and DIR/README.md (verdicts)")


def run(args: argparse.Namespace) -> int:
    src = Path(args.results)
    if args.index:
        return _index(src)
    rows = read_results(src)  # a clear error for a missing or malformed table
    if not rows:
        raise ElthError(f"{src}: the results table has no rows")
    results_dir = src if src.is_dir() else src.parent
    out = Path(args.out) if args.out else results_dir
    check_output_dir(out, "--out" if args.out else "the results' directory")
    report = write_report(src, out, rows=rows)
    print(f"report: {report}")

    for figure in report_figures(report):
        print(f"figure: {figure}")
    return 0


def _index(root: Path) -> int:
    if not root.is_dir():
        raise ElthError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}; --index reads a folder "
                        "of experiment directories")
    dirs = experiment_dirs(root)
    if not dirs:
        raise ElthError(f"{root}: no experiment directories (with experiment.json) in it")
    for d in dirs:
        print(f"report: {write_report(d)}")
    print(f"verdicts: {write_verdict_index(root, preamble=INDEX_PREAMBLE)}")
    return 0


INDEX_PREAMBLE = """\
Each folder holds one experiment's `report.md` (verdicts, tables, paired comparisons over seeds,
compute), its figure(s), the tidy rows (`results.csv`, `results.jsonl`) and `experiment.json`
(spec, protocol, command, wall time). Each report's "This scale" paragraph says what differs from
the paper, and its header says when it ran fewer seeds than its spec now asks for.
`protocols.md` gives each cpu-scale protocol's measured seed-to-seed spread and wall time.
Regenerate the reports and this page with `elth report docs/results --index`.
"""
