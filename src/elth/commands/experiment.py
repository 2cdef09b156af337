"""`elth experiment`: run one of the paper's figures or tables (a shipped spec) at some scale."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from elth.commands.common import (
    add_data_dir_argument,
    add_distributed_arguments,
    check_output_dir,
    resolve_device,
    run_on_ranks,
)
from elth.errors import ElthError
from elth.experiments.launch import LaunchOptions
from elth.experiments.lease import DEFAULT_TIMEOUT
from elth.experiments.leased import follow_rank_zero, leading_ranks
from elth.experiments.report import report_figures, summary_text, write_report
from elth.experiments.results import read_results
from elth.experiments.runner import (
    ExperimentFailed,
    build_graph,
    report_from_store,
    run_experiment,
)
from elth.experiments.shipped import EXPERIMENTS, get_experiment
from elth.experiments.slurm_launcher import SlurmOptions, parse_slurm_args, parse_time
from elth.experiments.spec import expand
from elth.experiments.spec_file import (
    experiment_toml,
    is_spec_file,
    load_experiment_file,
    measures_text,
)
from elth.experiments.status import format_status, pace, survey
from elth.limits import MAX_SEEDS, check_real
from elth.training import distributed

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

Where runs execute (--launcher):
  local  here: one run at a time in this process (--workers 1), or K worker processes
         (--workers K), each with T torch threads (--threads T; default: the CPU cores / K). With
         --device cuda and several workers, --devices 0,1,2,3 spreads them over those GPUs (worker
         i on GPU i mod 4; K = 8 puts two workers on each GPU, each with T threads for its data
         and host work); without --devices every worker uses the first visible GPU.
  slurm  one SLURM job per run through submitit (--partition, --cpus-per-run, --gpus-per-run,
         --time, --slurm-arg KEY=VALUE for any other sbatch option), at most --max-parallel
         queued or running at once. Run it on a login node; the store (--root) and the output
         directory must be on a file system that every node sees. A job's torch threads are its
         --cpus-per-run; with --gpus-per-run the run trains on its job's GPU.

Runs take a lease in their directory (a heartbeat every --lease-timeout/6 seconds): any number of `elth
experiment` processes, on one machine or on many, can work on one store at once; each run is
trained by one of them, the others read its result back, and a run whose worker died (no
heartbeat for --lease-timeout seconds) is taken over. A ticket run starts as soon as the IMP
levels it needs exist, not when every IMP run is finished. --status prints what is done, running
(where, since when), failed (the last line of its error) or waiting, from the store alone.

examples:
  elth experiment --list
  elth experiment --show demo > my_spec.toml     # a spec file to start from; edit it, then:
  elth experiment my_spec.toml --scale cpu
  elth experiment smoke --scale smoke
  elth experiment fc_table5 --scale cpu --workers 2
  elth experiment resnet_family --scale cpu --seeds 1
  elth experiment resnet_family --scale paper --device cuda --workers 8 --devices 0,1,2,3
  elth experiment resnet_family --scale paper --launcher slurm --partition gpu --gpus-per-run 1 \\
      --cpus-per-run 8 --time 12:00:00 --max-parallel 100 --root /shared/elth/runs
  elth experiment resnet_family --scale paper --status
  elth experiment resnet_family --scale paper --report-only
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?",
                        help="experiment name (see --list), or a spec file of your own (FILE.toml; see --show)")
    mode = parser.add_mutually_exclusive_group()  # what the command does instead of running the experiment
    mode.add_argument("--list", action="store_true", help="list the experiments with their scales and exit")
    mode.add_argument("--show", action="store_true",
                      help="print the experiment as a spec file (a start for your own: edit it, then run "
                           "`elth experiment FILE.toml`) and exit")
    mode.add_argument("--measures", action="store_true",
                      help="list the measures a spec file's claims can name and exit")
    parser.add_argument("--scale", choices=("paper", "cpu", "smoke"), default="cpu",
                        help="protocol scale (default: cpu)")
    parser.add_argument("--seeds", type=int, metavar="N",
                        help="number of seeds, 0..N-1 (default: the spec's, 3 at paper scale)")
    parser.add_argument("--workers", type=int, metavar="K",
                        help="run independent runs in K local processes (default: one per --devices GPU, "
                        "else 1, in this process)")
    parser.add_argument("--threads", type=int, metavar="T",
                        help="torch threads per worker (default: with --workers K, the CPU cores / K; "
                        "with one worker, torch's default)")
    parser.add_argument("--root", default="runs", metavar="DIR",
                        help="store of runs shared by all experiments (default: ./runs)")
    parser.add_argument("--out", metavar="DIR",
                        help="where results and report go (default: ROOT/experiments/NAME-SCALE)")
    add_data_dir_argument(parser, must_exist=False)
    parser.add_argument("--fuse", type=int, metavar="K",
                        help="train ready runs of one network and protocol (ticket runs, IMP runs of different seeds, "
                             "LMC copies) K at a time as one fused network, one task per group (one job with "
                             "--launcher slurm) (same results and run directories; default: chosen from the device's memory "
                             "and the model; on CPUs 4 for MLPs and narrow conv nets, else 1, and a CPU never trains more "
                             "than that in one fused network: a larger group trains as several in turn; 1: each run alone)")
    parser.add_argument("--device", help="torch device such as cpu or cuda (default: cuda if available, else cpu); "
                        "under torchrun each rank takes cuda:LOCAL_RANK")
    add_distributed_arguments(parser)
    parser.add_argument("--devices", metavar="LIST",
                        help="GPUs for the local workers, e.g. 0,1,2,3 or all (visible ones); implies --device cuda")
    mode.add_argument("--dry-run", action="store_true", help="list the runs the experiment expands to and exit")
    mode.add_argument("--status", action="store_true",
                      help="print where each run stands (done, running, failed, waiting) and exit")
    mode.add_argument("--report-only", action="store_true",
                      help="rebuild the results table and report from the finished runs; train nothing")
    parser.add_argument("--keep-diverged", action="store_true",
                        help="a ticket whose training diverges (non-finite loss) is recorded as diverged and the "
                        "experiment goes on and succeeds without it (default: such a run fails the experiment)")
    parser.add_argument("--no-report", action="store_true", help="write the results table only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-run lines")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard event files beside each run's metrics.jsonl "
                        "(needs: pip install 'elth[tensorboard]')")
    parser.add_argument("--lease-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                        help="seconds without a heartbeat after which a run's worker is presumed dead and "
                        f"another takes the run over (default: {DEFAULT_TIMEOUT:.0f})")
    cluster = parser.add_argument_group("cluster (--launcher slurm)")
    cluster.add_argument("--launcher", choices=("local", "slurm"), default="local",
                         help="where runs execute (default: local; see above)")
    cluster.add_argument("--partition", help="SLURM partition of the jobs (default: the cluster's)")
    cluster.add_argument("--cpus-per-run", type=int, default=1, metavar="N", help="CPUs per job (default: 1)")
    cluster.add_argument("--gpus-per-run", type=int, default=0, metavar="N", help="GPUs per job: 0 (default) or 1; several ranks per job are not supported")
    cluster.add_argument("--time", default="24:00:00", metavar="T",
                         help="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS (default: 24:00:00)")
    cluster.add_argument("--max-parallel", type=int, default=64, metavar="N",
                         help="at most N jobs queued or running at once (default: 64)")
    cluster.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                         help="any other sbatch option, e.g. --slurm-arg qos=high --slurm-arg account=abc")
    parser.set_defaults(_launch=launch_checked)


def launch_checked(args: argparse.Namespace, argv: list[str]) -> int:
    """`run_on_ranks`, after refusing what several ranks cannot do, before any rank starts."""
    if args.nproc is not None or distributed.launched_by_torchrun():
        launch_options(args).check_for_ranks()
    return run_on_ranks(args, argv)


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


def dry_run(experiment, scale: str, seeds: int | None) -> str:
    lines = []
    imp, others = set(), 0
    for setup in experiment.setups(scale):
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
    if args.measures:
        print("The measures a claim of a spec file can name (measure = NAME, params = { ... }):")
        print(measures_text())
        return 0
    if not args.name:
        raise ElthError("name an experiment (`elth experiment --list` shows them) or a spec file (FILE.toml)")
    experiment = find_experiment(args.name)
    if args.show:
        print(experiment_toml(experiment), end="")
        return 0
    experiment.setups(args.scale)  # a clear error for a scale the experiment lacks
    if args.seeds is not None and not 1 <= args.seeds <= MAX_SEEDS:
        raise ElthError(f"--seeds must be from 1 to {MAX_SEEDS}, got {args.seeds}")
    # below a second, heartbeats (a sixth of it) would be missed by a merely busy worker
    check_real(args.lease_timeout, "--lease-timeout", low=1.0)
    if args.dry_run:
        print(dry_run(experiment, args.scale, args.seeds))
        return 0
    if args.status:
        print(status(experiment, args))
        return 0
    out = Path(args.out) if args.out else default_out(args.root, experiment.name, args.scale)
    check_output_dir(args.root, "--root")
    check_output_dir(out, "--out")
    if args.report_only:
        return report_only(experiment, args, out)
    return execute(experiment, args.scale, args, out, command=command_of(args))


def find_experiment(name: str):
    """A shipped experiment by name, or the experiment of a spec file (a name ending in .toml or a path)."""
    if is_spec_file(name):
        return load_experiment_file(name)
    return get_experiment(name)


def status(experiment, args: argparse.Namespace) -> str:
    _, _, graph = build_graph(experiment, args.scale, root=args.root, seeds=args.seeds, data_dir=args.data_dir,
                              keep_diverged=True)
    statuses = survey(graph, args.lease_timeout)
    return format_status(f"{experiment.name} ({args.scale}) in {args.root}", statuses,
                         pace_line=pace(graph, statuses))


def report_only(experiment, args: argparse.Namespace, out: Path) -> int:
    outcome = report_from_store(experiment, args.scale, root=args.root, out_dir=out, seeds=args.seeds,
                                data_dir=args.data_dir, command=command_of(args))
    _, _, graph = build_graph(experiment, args.scale, root=args.root, seeds=args.seeds, data_dir=args.data_dir)
    total = len(graph.nodes)
    print(f"{outcome.cached} of {total} runs finished (results of the others are left out)", file=sys.stderr)
    if outcome.rows:
        print(summary_text(outcome.rows))
        report = write_report(out)
        print(f"report:  {report} (figures: {', '.join(str(f) for f in report_figures(report))})")
    print(f"results: {out / 'results.csv'} (and results.jsonl)")
    return 0


def launch_options(args: argparse.Namespace):
    """Where the runs execute, from the command line."""
    devices: tuple[str, ...] = ()
    if getattr(args, "devices", None):
        devices = parse_devices(args.devices)
    slurm = SlurmOptions(
        partition=getattr(args, "partition", None), gpus_per_run=getattr(args, "gpus_per_run", 0),
        cpus_per_run=getattr(args, "cpus_per_run", 1), time_min=parse_time(getattr(args, "time", "24:00:00")),
        extra=parse_slurm_args(getattr(args, "slurm_arg", [])),
    )
    workers = args.workers if args.workers is not None else max(1, len(devices))
    return LaunchOptions(launcher=getattr(args, "launcher", "local"), workers=workers, threads=args.threads,
                         devices=devices, slurm=slurm, max_parallel=getattr(args, "max_parallel", 64))


def parse_devices(text: str) -> tuple[str, ...]:
    """`0,1,3` -> cuda:0, cuda:1, cuda:3; `all` -> every visible GPU."""
    text = text.strip()
    if text == "all":
        n = torch.cuda.device_count()
        if n == 0:
            raise ElthError("--devices all: no GPU is visible")
        return tuple(f"cuda:{i}" for i in range(n))
    out = []
    for part in text.split(","):
        part = part.strip().removeprefix("cuda:")
        if not (part.isascii() and part.isdigit()):
            raise ElthError(f"--devices {text!r}: expected GPU numbers such as 0,1,2,3 (or all)")
        out.append(f"cuda:{int(part)}")
    return tuple(out)


def check_visible(devices: tuple[str, ...]) -> None:
    """The GPUs `--devices` names exist here (before any worker starts on one)."""
    visible = torch.cuda.device_count()
    if visible == 0:
        raise ElthError(f"--devices {','.join(d.removeprefix('cuda:') for d in devices)}: no GPU is visible here "
                        f"(torch {torch.__version__}: {'no CUDA build' if torch.version.cuda is None else 'CUDA build'}"
                        "; CUDA_VISIBLE_DEVICES and the driver decide what is visible)")
    missing = [d for d in devices if int(d.split(":")[1]) >= visible]
    if missing:
        raise ElthError(f"--devices: {', '.join(missing)} does not exist: {visible} GPU(s) visible, "
                        f"cuda:0 to cuda:{visible - 1}")


def command_of(args: argparse.Namespace) -> str:
    """The command line that reruns this experiment (recorded in experiment.json and the report)."""
    parts = ["elth", "experiment", args.name, "--scale", args.scale]
    for flag, value in (("--seeds", args.seeds), ("--workers", args.workers if args.workers != 1 else None),
                        ("--threads", args.threads), ("--root", args.root if args.root != "runs" else None),
                        ("--out", args.out), ("--data-dir", args.data_dir), ("--device", args.device),
                        ("--devices", getattr(args, "devices", None)),
                        ("--launcher", getattr(args, "launcher", "local") if getattr(args, "launcher", "local") != "local"
                         else None),
                        ("--fuse", getattr(args, "fuse", None))):
        if value is not None:
            parts += [flag, str(value)]
    if args.keep_diverged:
        parts.append("--keep-diverged")
    return " ".join(parts)


def execute(experiment, scale: str, args: argparse.Namespace, out: Path, setups=None, command: str = "") -> int:
    """Run, print the summary, write the report; shared with `elth demo`. Over several ranks, rank 0
    does all of it (alone) and the other ranks only join the trainings it hands them."""
    if distributed.is_active() and not distributed.is_main():
        follow_rank_zero()
        return 0
    with leading_ranks():
        return _execute(experiment, scale, args, out, setups, command)


def _execute(experiment, scale: str, args: argparse.Namespace, out: Path, setups, command: str) -> int:
    launch = launch_options(args)
    if launch.devices and args.device not in (None, "cuda"):
        raise ElthError(f"--devices spreads workers over GPUs: it does not combine with --device {args.device}")
    if launch.devices and launch.launcher == "local":
        check_visible(launch.devices)
    if launch.devices:
        # each worker takes its own GPU; a single worker runs here on the first one listed
        device = launch.devices[0] if launch.workers == 1 else "cuda"
    else:
        device = str(resolve_device(args.device)) if args.device else None
    if launch.launcher != "local" and device is None and launch.slurm.gpus_per_run:
        device = "cuda"
    failed: ExperimentFailed | None = None
    try:
        outcome = run_experiment(
            experiment, scale, root=args.root, out_dir=out, seeds=getattr(args, "seeds", None),
            data_dir=args.data_dir, device=device, progress=not args.no_progress, setups=setups, command=command,
            launch=launch, lease_timeout=getattr(args, "lease_timeout", DEFAULT_TIMEOUT),
            tensorboard=getattr(args, "tensorboard", False), keep_diverged=getattr(args, "keep_diverged", False),
            fuse=getattr(args, "fuse", None),
        )
        rows = outcome.rows
        others = f", {outcome.by_others} by other workers" if outcome.by_others else ""
        kept = f", {len(outcome.diverged)} diverged (kept)" if outcome.diverged else ""
        print(f"\n{experiment.title} ({scale}): {outcome.trained} runs trained{others}, {outcome.cached} read from "
              f"the store{kept}, {outcome.seconds:.0f}s", file=sys.stderr)
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
