"""Data-parallel scaling: images/s of elth's training loop on 1 and 2 ranks (or with and without DDP).

Every case trains the same model on the same global batch (128 synthetic 32x32x3 images, the
protocol's batch, split over the ranks) with `elth.training.train`, started the way users start
it: `python -m torch.distributed.run --standalone --nproc_per_node=N` for N ranks, a plain process
for "no DDP". Cases:

* `none`  - one process, no process group, no DDP.
* `1`     - torchrun with one rank: DDP over a group of one (gloo on CPU, NCCL on CUDA).
* `2`     - torchrun with two ranks, each on half of the global batch (CPU: gloo; CUDA: NCCL, needs
            two GPUs).

CPU (default: cases 1 and 2): every rank gets `--threads` torch threads (default 1), so two ranks
use twice the cores of one and the ideal ratio is 2.0; what is lost to it is the cost of the
all-reduce (gloo) and of the smaller per-rank batch. CUDA (`--device cuda`, default cases none
and 1): what DDP with NCCL costs on one GPU.

Each round runs every case once, in an order that rotates from round to round, so background load
hits all cases alike; a case times `--steps` steps after `--warmup` untimed ones (rank 0's clock,
after each optimiser step; CUDA synchronised). Reported: images/s from the median step time of all
rounds, and the ratio of each case to the first.

    python benchmarks/ddp_scaling.py                              # ResNet-20 and -56, 1 vs 2 CPU ranks
    python benchmarks/ddp_scaling.py --device cuda                # 1 GPU: NCCL DDP vs no DDP
    python benchmarks/ddp_scaling.py --models cifar_resnet_20 --steps 4 --rounds 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BATCH = 128
SHAPE = (3, 32, 32)
RESULT_PREFIX = "DDP_SCALING "


def worker(model_name: str, device: str, warmup: int, steps: int, threads: int) -> None:
    """One case's process (or rank): train warmup + steps steps; rank 0 prints its step durations."""
    import torch

    torch.set_num_threads(threads)
    from elth.data.base import synthetic
    from elth.models import build_model
    from elth.training import Protocol, distributed, train

    device = distributed.init(device)
    data = synthetic(input_shape=SHAPE, num_classes=10, num_train=BATCH * (warmup + steps), num_test=BATCH, seed=0)
    data = data.to(device)
    model = build_model(model_name, SHAPE, 10, seed=0)
    protocol = Protocol(length=f"{warmup + steps}it", batch_size=BATCH, lr=0.1, milestones=())
    marks: list[float] = []

    def mark(step: int, _model) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        marks.append(time.perf_counter())

    train(model, data, protocol, eval_every=None, device=device, progress=False, callback=mark)
    if distributed.is_main():
        durations = [b - a for a, b in zip(marks[warmup - 1:], marks[warmup:])]
        print(RESULT_PREFIX + json.dumps({"durations": durations}), flush=True)


def run_case(case: str, args: argparse.Namespace, model_name: str) -> list[float]:
    """Step durations of one run of `case` (a fresh process or torchrun group)."""
    script = [os.path.abspath(__file__), "--worker", "--models", model_name, "--device", args.device,
              "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]
    if case == "none":
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={case}", *script]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"case {case} of {model_name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])["durations"]


def label(case: str, device: str) -> str:
    if case == "none":
        return "no DDP"
    backend = "NCCL" if device.startswith("cuda") else "gloo"
    return f"{case} rank{'s' if case != '1' else ''} ({backend})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cifar_resnet_20,cifar_resnet_56", help="comma-separated model names")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--cases", help="comma-separated cases: none, 1, 2 (default: 1,2 on cpu, none,1 on cuda)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case and round (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first, at least 1 (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the cases (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1")
    if args.worker:
        worker(args.models, args.device, args.warmup, args.steps, args.threads)
        return
    cases = (args.cases or ("none,1" if args.device.startswith("cuda") else "1,2")).split(",")
    models = args.models.split(",")
    print(f"global batch {BATCH} of {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} images, {args.steps} timed steps after "
          f"{args.warmup}, {args.rounds} round(s), {args.threads} torch thread(s) per rank, device {args.device}",
          flush=True)
    durations = {(m, c): [] for m in models for c in cases}
    for r in range(args.rounds):
        for m in models:
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for c in order:
                durations[(m, c)] += run_case(c, args, m)
    names = [f"{label(c, args.device)} img/s" for c in cases]
    names += [f"{label(c, args.device)} / {label(cases[0], args.device)}" for c in cases[1:]]
    widths = [max(len(n), 8) + 3 for n in names]
    print(f"{'model':<18}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths)))
    for m in models:
        rates = [BATCH / statistics.median(durations[(m, c)]) for c in cases]
        cells = [f"{v:.1f}" for v in rates] + [f"{v / rates[0]:.2f}" for v in rates[1:]]
        print(f"{m:<18}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)), flush=True)

if __name__ == "__main__":
    main()
