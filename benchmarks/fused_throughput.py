"""Total training throughput (images/s) of K fused members against the same K runs one after
another, in the same process and the same run.

For each model and K: K tickets (different initial weights, ~80%-sparse random masks, different
data seeds) are trained for `--steps` steps at batch `--batch` on 32x32x3 in-memory synthetic data
(crop + flip augmentation), once with `elth.training.train` run after run ("separate") and once as
one fused network with `elth.training.train_group(..., members_at_once=K)` ("fused"). Both include what a real run does
per step (augmentation, masks, metrics); evaluation is left out (`eval_every=None`, a one-batch
test set). Each (model, K) first runs one untimed step of each, then `--rounds` rounds that
rotate which goes first; reported are total images/s from the median round and the ratio
fused/separate (> 1: fusion is faster). On CPUs also "default/separate": `train_group` as elth
calls it there, which puts at most a few members in one fused network (`cpu_members_at_once`: 4
for MLPs and narrow conv nets, 1 for wider ones) and trains larger groups as several in turn.

With `--dst dpf` (or `rigl`) the members are DPF (RigL) runs from scratch at 80% sparsity, masks
updated every 16 steps, instead of tickets with fixed masks: their controllers step together on
the fused tensors.

On a busy machine `--clock cpu` (default on CPU with one thread) times the process's CPU time,
which other processes barely disturb; `--clock wall` times wall-clock seconds (use it on a GPU).

    python benchmarks/fused_throughput.py                                  # CPU, ~10 min on 2 cores
    python benchmarks/fused_throughput.py --models mlp_2 --ks 1,4,16 --device cuda --clock wall
    python benchmarks/fused_throughput.py --dst dpf --models cifar_resnet_20_8 --ks 1,2,4
"""
from __future__ import annotations

import argparse
import statistics
import time

SHAPE = (3, 32, 32)
CLASSES = 10
SPARSITY = 0.8


def _members(model_name: str, k: int, device: str, dst: str | None = None, steps: int = 0):
    """K tickets with random masks, or K runs from scratch of the DST method `dst` ("dpf", "rigl")
    that train `steps` steps."""
    import torch

    from elth.models import build_model
    from elth.sparsity.dst import DPF, RigL
    from elth.training import Member

    members = []
    for i in range(k):
        model = build_model(model_name, SHAPE, CLASSES, seed=i)
        if dst is not None:
            method = DPF if dst == "dpf" else RigL
            members.append(Member(model.to(device), data_seed=i, controller=method(SPARSITY, steps, update_every=16)))
            continue
        g = torch.Generator().manual_seed(1000 + i)
        mask = {n: torch.rand(model.get_parameter(n).shape, generator=g) >= SPARSITY for n in model.prunable_names()}
        members.append(Member(model.to(device), data_seed=i, mask=mask))
    return members


def _timer(clock: str, device: str):
    import torch

    def now() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.process_time() if clock == "cpu" else time.perf_counter()

    return now


def measure(model_name: str, k: int, steps: int, batch: int, rounds: int, device: str, clock: str, precision: str,
            dst: str | None = None) -> dict[str, float]:
    """Total images/s for K members of `model_name`: "separate", "fused" (all K in one fused network)
    and, on CPUs, "default" (`train_group` as elth calls it there: at most a few members at once)."""
    from elth.data.base import synthetic
    from elth.training import Protocol, train, train_group

    data = synthetic(input_shape=SHAPE, num_classes=CLASSES, num_train=batch * steps, num_test=batch, seed=0).to(device)
    protocol = Protocol(length=f"{steps}it", batch_size=batch, lr=0.05, milestones=())
    now = _timer(clock, device)
    common = dict(eval_every=None, precision=precision, device=device, progress=False)

    def separate(end: int) -> float:
        start = now()
        for m in _members(model_name, k, device, dst, steps):
            train(m.model, data, protocol, data_seed=m.data_seed, mask=m.mask, controller=m.controller, end_step=end,
                  **common)
        return now() - start

    def fused_with(members_at_once: int | None):
        def run(end: int) -> float:
            members = _members(model_name, k, device, dst, steps)
            start = now()
            train_group(members, data, protocol, end_step=end, members_at_once=members_at_once, **common)
            return now() - start
        return run

    cases = {"separate": separate, "fused": fused_with(k)}
    if device == "cpu":
        cases["default"] = fused_with(None)
    for fn in cases.values():
        fn(1)  # warm-up: allocator, kernel caches
    times = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # each case first in turn
            times[name].append(cases[name](steps))
    images = k * steps * batch
    return {name: images / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp_2,cifar_resnet_20_8,cifar_resnet_20")
    parser.add_argument("--ks", default="1,2,4,8,16", help="numbers of members, comma-separated")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None, help="default: cpu on CPU with one thread, else wall")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--dst", choices=("dpf", "rigl"), help="RigL or DPF runs from scratch instead of fixed-mask tickets")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    clock = args.clock or ("cpu" if args.device == "cpu" and args.threads == 1 else "wall")
    print(f"device {args.device}, {args.threads} thread(s), batch {args.batch}, {args.steps} steps x "
          f"{args.rounds} rounds, {args.precision}, {clock} clock, torch {torch.__version__}"
          + (f", {args.dst} runs" if args.dst else ""))
    cpu = args.device == "cpu"
    print(f"{'model':<20} {'K':>3} {'separate img/s':>15} {'fused img/s':>12} {'fused/separate':>15}"
          + (f" {'default/separate':>17}" if cpu else ""))
    for model_name in args.models.split(","):
        for k in (int(v) for v in args.ks.split(",")):
            rate = measure(model_name, k, args.steps, args.batch, args.rounds, args.device, clock, args.precision, args.dst)
            line = (f"{model_name:<20} {k:>3} {rate['separate']:>15.0f} {rate['fused']:>12.0f} "
                    f"{rate['fused'] / rate['separate']:>14.2f}x")
            if cpu:
                line += f" {rate['default'] / rate['separate']:>16.2f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
