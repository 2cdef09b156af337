"""`elth prune`: a ticket for a network by a pruning baseline, matched in sparsity to a request or a ticket."""
from __future__ import annotations

import argparse

from elth.commands.common import (
    add_data_dir_argument,
    add_device_arguments,
    add_protocol_arguments,
    check_output_dir,
    check_output_file,
    positive_int,
    protocol_from_args,
    resolve_device,
    seed_arg,
    sparsity_arg,
)
from elth.data import canonical_name, load_dataset
from elth.errors import ElthError
from elth.methods import PRUNING_METHODS
from elth.models import parse_model_name
from elth.sparsity.baselines import SCORE_EXAMPLES_PER_CLASS, ScoringOptions
from elth.sparsity.scores import SYNFLOW_ROUNDS
from elth.tickets import load_ticket, save_ticket
from elth.training import Protocol, default_rewind, parse_steps, preset
from elth.workflows.baseline_tickets import LIKE_METHODS, prune_ticket

DESCRIPTION = """\
Make a ticket for --model by a pruning baseline, at a given sparsity (--sparsity) or at the sparsity
of another ticket (--like; to the weight when the models match, the same fraction otherwise).

The score-based methods work on the model's rewind weights: the dense network trained to the rewind
point under the same protocol and seeds as `elth imp` (shared through the run cache in --root; with
--like, the ticket's protocol and rewind point are the defaults), then
pruned globally over the prunable weights (ResNets: every conv/linear weight; VGGs and MLPs keep the
output layer dense; see --exclude). Excluded weights count in the sparsity.

methods:
  magnitude   one-shot, smallest |w| removed
  snip        one-shot, smallest |g * w| removed (g: loss gradient over the scoring examples)
  grasp       one-shot, highest -w * (H g) removed (logits / 200; Hessian-gradient product)
  synflow     iterative (--synflow-rounds, exponential schedule), data-free, in float64
  random      with --like (same model): each layer of that ticket's mask shuffled within the layer;
              without: the same sparsity in every prunable layer; on the rewind weights
  reinit      --like's mask on freshly initialised weights (seeded by --seed), trained from step 0
  snip-extra  --like is a shallower source ticket of the same family: stretched by the default ETT
              (appending); units present in the source keep their masks, the extra units get SNIP
              masks with the layerwise sparsity of their copied masks

The scoring examples are a fixed, class-balanced set of training examples (--score-examples per
class, chosen by --data-seed); BN uses its running statistics while scoring (eval mode) unless
--score-train-mode. Layer collapse (a layer left without weights) is printed and recorded in the
ticket's warnings. Evaluate the result with `elth train-ticket OUT`.

examples:
  elth prune --model mlp_2 --dataset fashion_mnist --method snip --sparsity 0.8926 -o snip.safetensors
  elth prune --model cifar_resnet_20 --dataset cifar10 --method random --like ett.safetensors -o random.safetensors
  elth prune --model cifar_resnet_56 --dataset cifar10 --method snip-extra --like resnet32.safetensors -o se.safetensors
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="the network to prune (default: the --like ticket's model)")
    parser.add_argument("--dataset", help="dataset name (default: the --like ticket's dataset)")
    parser.add_argument("--method", required=True, choices=PRUNING_METHODS, help="pruning method (see above)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--sparsity", type=sparsity_arg, metavar="S",
                        help="fraction of all prunable weights to remove, e.g. 0.8926 or 89.26%%")
    target.add_argument("--like", metavar="TICKET",
                        help="match this ticket's sparsity (reinit/random reuse its mask; snip-extra's source)")
    parser.add_argument("--rewind", metavar="STEPS",
                        help="rewind point, e.g. 1000it, 200it, 5ep or 0 (default: the --like ticket's, else the "
                        "paper's for the model: CIFAR ResNets 1000it, VGGs 200it, ImageNet 5ep, MLPs 0)")
    add_protocol_arguments(parser)
    parser.set_defaults(preset=None)
    for action in parser._actions:
        if action.dest == "preset":
            action.help = ("protocol preset for the dataset and model family (default: the --like ticket's "
                           "protocol if it records one, else paper)")
    g = parser.add_argument_group("scoring")
    g.add_argument("--score-examples", type=positive_int, default=SCORE_EXAMPLES_PER_CLASS, metavar="N",
                   help=f"scoring examples per class for snip, grasp, snip-extra (default: {SCORE_EXAMPLES_PER_CLASS})")
    g.add_argument("--score-train-mode", action="store_true",
                   help="score with BN in training mode (batch statistics) instead of eval mode")
    g.add_argument("--synflow-rounds", type=positive_int, default=SYNFLOW_ROUNDS, metavar="N",
                   help=f"SynFlow pruning rounds (default: {SYNFLOW_ROUNDS})")
    g.add_argument("--exclude", nargs="*", metavar="LAYER",
                   help="layers kept dense (weight or module names, e.g. fc conv); replaces the model's default "
                   "(VGGs and MLPs: the output layer); give --exclude alone to prune every layer")
    parser.add_argument("--seed", type=seed_arg,
                        help="seed of the model's initialisation, as for `elth imp` (selects the rewind point); "
                        "also seeds random and reinit (default: the --like ticket's, if recorded, else 0)")
    parser.add_argument("--data-seed", type=seed_arg, metavar="SEED",
                        help="seed of the data order to the rewind point and of the scoring examples "
                        "(default: the --like ticket's, if recorded and --seed is not given, else --seed)")
    add_data_dir_argument(parser)
    parser.add_argument("--root", default="runs", metavar="DIR",
                        help="run cache shared with `elth imp` (rewind points; default: ./runs)")
    add_device_arguments(parser, "precision of the dense training to the rewind point, as for `elth imp` (default: fp32)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.safetensors", help="where to write the ticket")


def run(args: argparse.Namespace) -> int:
    if args.method in LIKE_METHODS and args.like is None:
        raise ElthError(f"--method {args.method} needs --like TICKET")
    if args.like is None and args.sparsity is None:
        raise ElthError("give --sparsity S or --like TICKET")
    check_output_file(args.output, "-o")
    check_output_dir(args.root, "--root")
    like = load_ticket(args.like) if args.like else None
    model = args.model or (like.model if like else None)
    if model is None:
        raise ElthError("give --model (or --like TICKET to take its model)")
    parse_model_name(model)
    dataset = canonical_name(args.dataset or like.dataset.name) if (args.dataset or like) else None
    if dataset is None:
        raise ElthError("give --dataset (or --like TICKET to take its dataset)")
    # A --like ticket of the same family supplies the defaults of protocol, rewind point and seeds,
    # so that the result starts from the same setting as that ticket's IMP run.
    same_family = like is not None and parse_model_name(like.model).family == parse_model_name(model).family
    recorded = like.provenance if same_family else {}
    if args.preset is not None:
        base = preset(args.preset, dataset, model)
    elif same_family and like.protocol:
        base = Protocol.from_dict(like.protocol)
    else:
        base = preset("paper", dataset, model)
    protocol = protocol_from_args(args, dataset, model, base=base)
    if args.rewind is not None:
        rewind = args.rewind
    elif same_family:
        rewind = like.rewind
    else:
        rewind = default_rewind(model, dataset)
    parse_steps(rewind, 1)  # syntax check before the data is loaded
    # A seed recorded as null (transformed tickets of earlier versions) is no seed.
    recorded_seed = recorded.get("seed")
    seed = args.seed if args.seed is not None else int(recorded_seed if recorded_seed is not None else 0)
    if args.data_seed is not None:
        data_seed = args.data_seed
    elif args.seed is None and recorded.get("data_seed") is not None:
        data_seed = int(recorded["data_seed"])
    else:
        data_seed = seed
    device = resolve_device(args.device)

    data = load_dataset(dataset, args.data_dir, device=device)
    options = ScoringOptions(args.score_examples, args.synflow_rounds, args.score_train_mode)
    result = prune_ticket(
        args.method, model, data, protocol, rewind=rewind, sparsity=args.sparsity, like=like,
        like_path=args.like, exclude=args.exclude, options=options, seed=seed, data_seed=data_seed,
        root=args.root, device=device, precision=args.precision, progress=not args.no_progress,
    )
    path = save_ticket(result.ticket, args.output)
    ticket = result.ticket
    kept = ticket.provenance["kept"]
    total = ticket.provenance["prunable"]
    print(f"method: {args.method}")
    print(f"model: {ticket.model} on {data.info.name} (rewind {ticket.rewind}, step {ticket.rewind_step})")
    print(f"sparsity: requested {100 * result.requested_sparsity:.4f}%, actual {100 * ticket.sparsity:.4f}% "
          f"({kept:,} of {total:,} weights kept)")
    examples = f" ({result.score_examples} scoring examples)" if result.score_examples else ""
    print(f"mask time: {result.mask_seconds:.3f} s{examples}")
    for w in ticket.warnings:
        print(f"warning: {w}")
    print(f"wrote {path}")
    return 0
