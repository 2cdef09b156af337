"""Where fused conv members end, against their lone runs and against the spread of seeds (float32).

A fused member and its lone run differ by rounding, and small-batch SGD carries a rounding gap on
once some ReLU input falls closer to zero than that gap (`tests/test_training_fused.py` explains it,
and pins that in float64 a member equals its lone run bit for bit). This measures whether the gap
matters: K seeds (initial weights, random masks of 50-80% density, data orders) of a conv net are
trained three ways, in the same process and the same run:

- lone: `elth.training.train`, run after run (channels_last convolutions, as elth trains);
- fused: one fused network of the K members (`train_group(..., members_at_once=K)`);
- contiguous: lone runs whose convolutions use the contiguous memory format (the same arithmetic
  summed in another order: "another kernel choice", the reference for what rounding alone does).

Printed: each seed's test accuracy three ways, the seeds' own standard deviation (lone), and the
ratios mean |fused - lone| / seed std and mean |contiguous - lone| / seed std. Ratios well below 1,
and of the same size for fused and contiguous, mean a fused member departs from its lone run no more
than rounding does, and far less than a change of seed.

    python benchmarks/fused_equivalence.py                       # digits, cifar_resnet_8_8, 4 seeds
    python benchmarks/fused_equivalence.py --dataset fashion_mnist --model cifar_resnet_14_8 --length 1ep
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time


def members(model_name: str, data, k: int):
    """k models with different initial weights and random masks (densities 0.5 to 0.8)."""
    import torch

    from elth.models import build_model

    models, masks = [], []
    for i in range(k):
        model = build_model(model_name, data.info.input_shape, data.info.num_classes, seed=i)
        g = torch.Generator().manual_seed(100 + i)
        density = 0.5 + 0.3 * i / max(1, k - 1)
        masks.append({n: torch.rand(model.get_parameter(n).shape, generator=g) < density
                      for n in model.prunable_names()})
        models.append(model)
    return models, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cifar_resnet_8_8")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, default=4, help="K: members of the fused group, one per seed")
    parser.add_argument("--length", default="8ep")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--decay-at", type=float, default=0.5,
                        help="LR x0.1 at this fraction of the training and again at (1 + it) / 2 (0: constant LR)")
    args = parser.parse_args()

    import torch

    import elth.training.loop as loop
    from elth.analysis.stats import paired_difference
    from elth.data import load_dataset
    from elth.training import Member, Protocol, train, train_group
    from elth.training.protocol import parse_steps

    torch.set_num_threads(1)
    data = load_dataset(args.dataset)
    total = parse_steps(args.length, data.iterations_per_epoch(args.batch_size))
    milestones = () if not args.decay_at else tuple(
        f"{int(total * f)}it" for f in (args.decay_at, (1 + args.decay_at) / 2))
    protocol = Protocol(length=args.length, batch_size=args.batch_size, lr=args.lr, momentum=0.9,
                        milestones=milestones, warmup="10it")
    models, masks = members(args.model, data, args.seeds)
    seeds = range(args.seeds)
    print(f"{args.model} on {args.dataset}, {args.seeds} seeds, {args.length} at batch {args.batch_size}, "
          f"lr {args.lr} (x0.1 at {', '.join(milestones) or 'never'}); torch {torch.__version__}, kernels {torch.backends.cpu.get_cpu_capability()}")

    def lone(contiguous: bool) -> list[float]:
        original = loop.use_channels_last
        if contiguous:
            loop.use_channels_last = lambda model, device: False
        try:
            return [train(copy.deepcopy(models[i]), data, protocol, data_seed=i, mask=masks[i], progress=False,
                          device="cpu", eval_every=None).test_accuracy for i in seeds]
        finally:
            loop.use_channels_last = original

    start = time.perf_counter()
    alone = lone(contiguous=False)
    fused = [r.test_accuracy for r in train_group(
        [Member(copy.deepcopy(models[i]), i, masks[i], None) for i in seeds], data, protocol, progress=False,
        device="cpu", eval_every=None, members_at_once=args.seeds)]
    other = lone(contiguous=True)
    print(f"{'seed':>4}  {'lone':>7}  {'fused':>7}  {'contiguous':>10}")
    for i in seeds:
        print(f"{i:>4}  {100 * alone[i]:>6.2f}%  {100 * fused[i]:>6.2f}%  {100 * other[i]:>9.2f}%")
    spread = statistics.stdev(alone) if args.seeds > 1 else float("nan")
    gap = statistics.fmean(abs(f - a) for f, a in zip(fused, alone))
    rounding = statistics.fmean(abs(o - a) for o, a in zip(other, alone))
    print(f"seed std (lone): {100 * spread:.2f} points")
    print(f"mean |fused - lone|:      {100 * gap:.2f} points = {gap / spread:.2f}x the seed std")
    print(f"mean |contiguous - lone|: {100 * rounding:.2f} points = {rounding / spread:.2f}x the seed std")
    for name, values in (("fused", fused), ("contiguous", other)):
        d = paired_difference({i: 100 * v for i, v in zip(seeds, values)}, {i: 100 * a for i, a in zip(seeds, alone)})
        i = d.interval
        print(f"{name} - lone, paired over seeds: {i.mean:+.2f} [{i.low:+.2f}, {i.high:+.2f}] points (95% interval)")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
