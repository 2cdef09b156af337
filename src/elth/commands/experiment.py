"""`elth experiment`: run one of the paper's figures or tables (a shipped spec) at some scale."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elth.commands.common import add_distributed_arguments, check_output_dir, resolve_device
from elth.errors import ElthError
from elth.experiments.report import report_figures, summary_text, write_report
from elth.experiments.results import read_results
from elth.experiments.runner import ExperimentFailed, run_experiment
from elth.experiments.spec import expand
from elth.experiments.specs import EXPERIMENTS, get_experiment

DESCRIPTION = """\
Run a shipped experiment spec: IMP with rewinding on every network of a model family, each IMP
ticket transformed (stretched or squeezed) to the other depths, pruning baselines matched to the
sparsity of the target's own IMP ticket, every ticket trained, over several seeds; then the tidy
results table (results.csv, results.jsonl) and the report (report.md with tables and a PNG
figure, as `elth report` writes it).

Scales:
  paper  the paper's protocol exactly (Table 4, CIFAR-10 / MNIST, full widths): for GPU machines
  cpu    reduced protocols a 2-core CPU finishes in a few hours on Fashion-MNIST
  smoke  seconds on synthetic data (a plumbing check)

Every run is kept in the store (--root, shared by all experiments and by `elth imp`/`elth prune`)
under a directory named by a hash of its settings: running an experiment again trains nothing that
is finished (the same IMP run serves every experiment that needs it) and resumes interrupted runs
from their checkpoints. A failing run is reported with its traceback; the others go on.

examples:
  elth experiment --list
  elth experiment smoke --scale smoke
  elth experiment fc_table5 --scale cpu --workers 2
  elth experiment resnet_family --scale cpu --seeds 1
  elth experiment resnet_family --scale paper --device cuda
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="experiment name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments with their scales and exit")
    parser.add_argument("--scale", choices=("paper", "cpu", "smoke"), default="cpu",
                        help="protocol scale (default: cpu)")
    parser.add_argument("--seeds", type=int, metavar="N",
                        help="number of seeds, 0..N-1 (default: the spec's, 3 at paper scale)")
    parser.add_argument("--workers", type=int, default=1, metavar="K",
                        help="run independent runs in K local processes (default: 1, in this process)")
    parser.add_argument("--threads", type=int, metavar="T",
                        help="torch threads per worker (default: with --workers K, the CPU cores / K; "
                        "with one worker, torch's default)")
    parser.add_argument("--root", default="runs", metavar="DIR",
                        help="store of runs shared by all experiments (default: ./runs)")
    parser.add_argument("--out", metavar="DIR",
                        help="where results and report go (default: ROOT/experiments/NAME-SCALE)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where the dataset's files are (default: $ELTH_DATA, then the usual places)")
    parser.add_argument("--fuse", type=int, metavar="K",
                        help="train ticket runs of one network, protocol and rewind step K at a time as one fused "
                             "network (same results and run directories; default: chosen from the device's memory "
                             "and the model; on CPUs 4 for MLPs and narrow conv nets, else 1; 1: each run alone)")
    parser.add_argument("--device", help="torch device such as cpu or cuda (default: cuda if available, else cpu); "
                        "under torchrun each rank takes cuda:LOCAL_RANK")
    add_distributed_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="list the runs the experiment expands to and exit")
    parser.add_argument("--keep-diverged", action="store_true",
                        help="a ticket whose training diverges (non-finite loss) is recorded as diverged and the "
                        "experiment goes on and succeeds without it (default: such a run fails the experiment)")
    parser.add_argument("--no-report", action="store_true", help="write the results table only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-run lines")


def list_experiments() -> str:
    lines = []
    for e in EXPERIMENTS.values():
        lines.append(f"{e.name}: {e.title}")
        lines.append(f"  paper: {e.paper}")
        for scale, setups in e.scales:
            for s in setups:
                lines.append(f"  --scale {scale:<5}  {s.dataset}: {', '.join(s.members)}; levels "
                             f"{', '.join(map(str, s.levels))}; {s.seeds} seed(s)")
                if s.note:
                    lines.append(f"               {s.note}")
        lines.append("")
    return "\n".join(lines).rstrip()


def dry_run(name: str, scale: str, seeds: int | None) -> str:
    lines = []
    imp, others = set(), 0
    for setup in get_experiment(name).setups(scale):
        plan = expand(setup.with_seeds(seeds))
        imp |= {(r.dataset or setup.dataset, r.model, r.seed) for r in plan.imp}  # shared IMP runs once
        others += len(plan.tickets) + len(plan.lmc)
        lmc = f" and {len(plan.lmc)} linear mode connectivity analyses" if plan.lmc else ""
        lines.append(f"{setup.dataset}: {len(plan.imp)} IMP runs, {len(plan.tickets)} other tickets{lmc}")
        lines += [f"  {r.label}" for r in plan.imp + plan.tickets + plan.lmc]
    lines.append(f"{len(imp) + others} runs in all")
    return "\n".join(lines)


def default_out(root: str, name: str, scale: str) -> Path:
    return Path(root) / "experiments" / f"{name}-{scale}"


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(list_experiments())
        return 0
    if not args.name:
        raise ElthError("name an experiment (`elth experiment --list` shows them)")

    experiment = get_experiment(args.name)
    experiment.setups(args.scale)  # a clear error for a scale the experiment lacks
    if args.seeds is not None and args.seeds < 1:
        raise ElthError(f"--seeds must be at least 1, got {args.seeds}")
    if args.dry_run:
        print(dry_run(args.name, args.scale, args.seeds))
        return 0
    out = Path(args.out) if args.out else default_out(args.root, args.name, args.scale)
    check_output_dir(args.root, "--root")
    check_output_dir(out, "--out")
    return execute(experiment, args.scale, args, out, command=command_of(args))


def command_of(args: argparse.Namespace) -> str:
    """The command line that reruns this experiment (recorded in experiment.json and the report)."""
    parts = ["elth", "experiment", args.name, "--scale", args.scale]
    for flag, value in (("--seeds", args.seeds), ("--workers", args.workers if args.workers != 1 else None),
                        ("--threads", args.threads), ("--root", args.root if args.root != "runs" else None),
                        ("--out", args.out), ("--data-dir", args.data_dir), ("--device", args.device),
                        ("--fuse", getattr(args, "fuse", None))):
        if value is not None:
            parts += [flag, str(value)]
    if args.keep_diverged:
        parts.append("--keep-diverged")
    return " ".join(parts)


def execute(experiment, scale: str, args: argparse.Namespace, out: Path, setups=None, command: str = "") -> int:
    """Run, print the summary, write the report; shared with `elth demo`."""
    device = str(resolve_device(args.device)) if args.device else None
    failed: ExperimentFailed | None = None
    try:
        outcome = run_experiment(
            experiment, scale, root=args.root, out_dir=out, seeds=getattr(args, "seeds", None),
            workers=args.workers, threads=args.threads, data_dir=args.data_dir, device=device,
            progress=not args.no_progress, setups=setups, command=command,
            keep_diverged=getattr(args, "keep_diverged", False), fuse=getattr(args, "fuse", None),
        )
        rows = outcome.rows
        kept = f", {len(outcome.diverged)} diverged (kept)" if outcome.diverged else ""
        print(f"\n{experiment.title} ({scale}): {outcome.trained} runs trained, {outcome.cached} read from the "
              f"store{kept}, {outcome.seconds:.0f}s", file=sys.stderr)
    except ExperimentFailed as e:
        failed = e

        rows = read_results(out)
    if rows:
        print(summary_text(rows))
    print(f"\nresults: {out / 'results.csv'} (and results.jsonl)")
    if rows and not getattr(args, "no_report", False):
        report = write_report(out)
        print(f"report:  {report} (figures: {', '.join(str(f) for f in report_figures(report))})")
    if failed is not None:
        raise failed
    return 0
