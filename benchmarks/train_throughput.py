"""Training throughput (images/s) of elth's loop next to a plain PyTorch loop, in the same run.

Cases, for each model (batch 128, 32x32x3 in-memory synthetic data):

* plain   - a loop as most code writes it: default memory format, fp32, `torch.optim.SGD` with
            default options, no augmentation, a Python loop over pre-made batches, `loss.item()`
            each step for the running loss.
* elth    - `elth.training.train`: crop + flip augmentation and normalisation from uint8 included,
            channels_last, fused SGD, device-side metrics, CPU allocator settings.
* masked  - the same with a random ~80%-sparse mask over every prunable weight.
* (with --untuned-malloc) elth with `ELTH_MALLOC_TUNING=0`, to show what the allocator settings buy.
* (with --reference-src DIR) elth's loop imported from another source tree (DIR holds its `elth`
            package, e.g. `src/` of a checkout of an earlier commit): a change to the loop measured
            against the code before it, in the same run.

Each case runs in its own worker process (elth's allocator settings are process-wide, so the plain
loop must not inherit them); the workers take turns, never run at once, in an order that rotates
from round to round, so background load hits all cases alike. Each round times every one of
`--steps` steps after `--warmup` untimed ones. Reported: images/s from the median step time over
all rounds (robust to steps slowed by other processes), the mean as well, and the ratios
elth/plain and masked/elth. On a busy machine, `--threads 1 --clock cpu` measures CPU time
instead, which other processes barely disturb.

    python benchmarks/train_throughput.py                  # both models, a few minutes on 2 cores
    python benchmarks/train_throughput.py --models cifar_resnet_20 --steps 20 --rounds 5
    git worktree add /tmp/before HEAD~1 && python benchmarks/train_throughput.py --reference-src /tmp/before/src
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

BATCH = 128
SHAPE = (3, 32, 32)


def _durations(marks: list[float], warmup: int) -> list[float]:
    """Seconds of each step after the `warmup` (>= 1) untimed ones; step i ends at marks[i]."""
    return [b - a for a, b in zip(marks[warmup - 1 :], marks[warmup:])]


def _make_case(case: str, model_name: str, warmup: int, steps: int, sparsity: float, device: str, clock):
    """A function running one timed round of `case`, returning its step durations."""
    import torch

    from elth.data.base import synthetic
    from elth.models import build_model

    data = synthetic(input_shape=SHAPE, num_classes=10, num_train=BATCH * (warmup + steps), num_test=BATCH, seed=0)
    data = data.to(device)
    model = build_model(model_name, SHAPE, 10, seed=0)

    if case == "plain":
        model = model.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        criterion = torch.nn.CrossEntropyLoss()
        batches = list(data.train_epoch(0, BATCH, seed=0, augment=False))

        def run_plain() -> list[float]:
            model.train()
            running_loss = 0.0
            marks = []
            for x, y in batches:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
                marks.append(clock())
            return _durations(marks, warmup)

        return run_plain

    from elth.training import Protocol, train

    mask = None
    if case == "masked":
        g = torch.Generator().manual_seed(0)
        params = dict(model.named_parameters())
        mask = {n: torch.rand(params[n].shape, generator=g) >= sparsity for n in model.prunable_names()}
    protocol = Protocol(length=f"{warmup + steps}it", batch_size=BATCH, lr=0.1, milestones=())

    def run_elth() -> list[float]:
        marks: list[float] = []
        # The final test evaluation comes after the last step's callback: it is not timed.
        train(model, data, protocol, mask=mask, eval_every=None, progress=False, device=device,
              callback=lambda step, _model: marks.append(clock()))
        return _durations(marks, warmup)

    return run_elth


def _worker(conn, case: str, model_name: str, warmup: int, steps: int, sparsity: float, device: str,
            threads: int | None, clock_name: str, reference_src: str | None = None) -> None:
    if case == "elth_untuned":
        os.environ["ELTH_MALLOC_TUNING"] = "0"
    if case == "reference":
        import sys

        sys.path.insert(0, os.path.abspath(reference_src))  # its elth, not this one
    import torch

    if threads:
        torch.set_num_threads(threads)
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    run = _make_case("elth" if case in ("elth_untuned", "reference") else case, model_name, warmup, steps, sparsity,
                     device, clock)
    conn.send("ready")
    while conn.recv() == "run":
        conn.send(run())
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cifar_resnet_20,cifar_resnet_56", help="comma-separated model names")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per case and round (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each timing, at least 1 (default 1)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of alternating cases (default 6)")
    parser.add_argument("--sparsity", type=float, default=0.8, help="sparsity of the masked case (default 0.8)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads in every case (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time steps by wall clock (default) or by the worker's CPU time (user + system, all "
                        "its threads): with --threads 1 the CPU time barely depends on other processes' load")
    parser.add_argument("--untuned-malloc", action="store_true",
                        help="add a case: elth's loop without its CPU allocator settings")
    parser.add_argument("--reference-src", metavar="DIR",
                        help="add a case: elth's loop from the elth package in DIR (another checkout's src/)")
    args = parser.parse_args()
    if args.reference_src and not os.path.isfile(os.path.join(args.reference_src, "elth", "__init__.py")):
        parser.error(f"--reference-src {args.reference_src}: no elth package there")
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be at least 1")

    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, device {args.device}, {threads} threads, batch {BATCH}, "
          f"{args.steps} timed steps after {args.warmup} warm-up steps, {args.rounds} rounds, {args.clock} clock")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores before starting: other processes "
              "compete for the CPU, so steps slowed by them are expected (medians resist some of that)")

    names = (["plain", "elth", "masked"] + (["elth_untuned"] if args.untuned_malloc else [])
             + (["reference"] if args.reference_src else []))
    ctx = mp.get_context("spawn")
    for model_name in args.models.split(","):
        workers = {}
        for case in names:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, case, model_name, args.warmup, args.steps,
                                                      args.sparsity, args.device, args.threads, args.clock,
                                                      args.reference_src),
                               daemon=True)
            proc.start()
            if parent.recv() != "ready":
                raise RuntimeError(f"worker for {case} failed to start")
            workers[case] = (proc, parent)
        times: dict[str, list[float]] = {k: [] for k in names}
        try:
            for r in range(args.rounds):
                order = names[r % len(names):] + names[: r % len(names)]  # each case leads in turn
                for case in order:
                    conn = workers[case][1]
                    conn.send("run")
                    times[case].extend(conn.recv())
        finally:
            for proc, conn in workers.values():
                conn.send("stop")
                proc.join(timeout=30)

        rate = {k: BATCH / statistics.median(v) for k, v in times.items()}
        mean_rate = {k: BATCH * len(v) / sum(v) for k, v in times.items()}
        print(f"\n{model_name}  (images/s from the median step time of {len(times['plain'])} timed steps; mean after it)")
        labels = {"plain": "plain PyTorch loop", "elth": "elth", "masked": f"elth masked ({args.sparsity:.0%} sparse)",
                  "elth_untuned": "elth, malloc untuned", "reference": "elth from --reference-src"}
        for case in names:
            print(f"  {labels[case]:<28} {rate[case]:7.1f} img/s   (mean {mean_rate[case]:7.1f})")
        print(f"  elth / plain     {rate['elth'] / rate['plain']:.2f}x   (mean {mean_rate['elth'] / mean_rate['plain']:.2f}x)")
        print(f"  masked / elth    {rate['masked'] / rate['elth']:.2f}x   (mean {mean_rate['masked'] / mean_rate['elth']:.2f}x)")
        if args.reference_src:
            print(f"  elth / reference {rate['elth'] / rate['reference']:.2f}x   "
                  f"(mean {mean_rate['elth'] / mean_rate['reference']:.2f}x)")
        if args.untuned_malloc:
            print(f"  elth untuned / plain {rate['elth_untuned'] / rate['plain']:.2f}x   "
                  f"(mean {mean_rate['elth_untuned'] / mean_rate['plain']:.2f}x)")


if __name__ == "__main__":
    main()
