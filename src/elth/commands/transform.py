"""`elth transform`: stretch or squeeze a ticket into a deeper or shallower model of its family,
and/or move it to another dataset."""
from __future__ import annotations

import argparse

from elth.commands.common import (
    add_data_dir_argument,
    check_output_file,
    index_list,
    seed_arg,
)
from elth.data import dataset_info
from elth.dataset_move import to_dataset
from elth.elastic import (
    ORDERS,
    SQUEEZE_MODES,
    Plan,
    format_plan,
    match_sparsity,
    parse_plan,
    replica_units,
    transform,
)
from elth.elastic.block_mapping import block_mapping_plan
from elth.elastic.plan import model_view
from elth.elastic.strategies import APPENDING, CONSECUTIVE
from elth.elastic.width import SQUEEZE_CRITERIA, apply_width_plan, format_width_plan, make_width_plan
from elth.errors import ElthError
from elth.masks import count
from elth.models import build_model, parse_model_name
from elth.tickets import Ticket, load_ticket, save_ticket

DESCRIPTION = """\
Stretch or squeeze a ticket into another depth of its model family (an Elastic Ticket
Transformation). The stem, the head and every stage's transition unit (unit 0) are copied
unchanged; every other target unit takes the rewind weights, mask and BN parameters and buffers
of the source unit the plan names. The number of stages never changes. Units are numbered from 0
within each stage; unit 0 is the transition. Replicating or dropping units changes the overall
sparsity a little; both the source's and the result's are printed.

Strategies (per stage: identity when the lengths agree, else stretch or squeeze):
  stretch   replicate units 1..n-1 as evenly as possible, earlier ones first (--units to choose);
            appending:     the copies follow the last replicated unit  (3 -> 5: 0,1,2,1,2)
            interpolation: each copy right after its source unit       (3 -> 5: 0,1,1,2,2)
            A stage of one unit replicates its transition when the shapes allow.
  squeeze   consecutive: drop the latest units                 (5 -> 3: 0,1,2)
            interval:    keep the first unit of N-1 even runs  (5 -> 3: 0,1,3; 9 -> 5: 0,1,3,5,7)
            --drop:      drop exactly these units (never unit 0)

Plan syntax (--plan): for each target unit in order, the index of the source unit that fills it;
units separated by ',', stages by ';'. One list applies to every stage.
  --plan 0,1,2,1,2                      ResNet-20 -> ResNet-32, the same list for all 3 stages
  --plan "0,1,2,1,2;0,1,1,2,2;0,1,2,3,4" one list per stage

The paper's code writes a plan the other way round (--block-mapping): source unit -> the target
units it fills, ids local to a stage, as in ElasticLTH's change_depth branch. CIFAR ResNets take
one map for every stage; ImageNet ResNets and VGGs one per stage, separated by '|'; VGGs with
several FC layers one map of their hidden FC layers (ids of their classifier: 0, 2, 4, ...); MLPs
one map of their fc_layers (the layer to 100 last, mapped to the target's last).
  --block-mapping '0:0;1:1,3;2:2,4'     ResNet-20 -> ResNet-32: the plan 0,1,2,1,2

Another width (beyond the paper; MLPs: mlp_<n>_<W>, W hidden units per layer, default 300; CIFAR
ResNets: cifar_resnet_<D>_<W>, W channels in the first stage): --to a network of the same depth and
another width; each layer's units (a ResNet stage's residual channels, a block's inner channels)
are one group. Stretching replicates each layer's units in order
(target unit j copies source unit j mod W) with their masks, and divides the next layer's inputs
from each source unit by its number of copies (--no-rescale: not), so that at the rewind point the
wider network computes the same function; --permute-replicas gives each copy a random permutation
of its mask. Squeezing keeps the units ranked highest by --width-squeeze: norm (of their kept rewind
weights, in and out; default), density (of their masks) or first (units 0..W-1, the naive control).
With a new depth as well (--to mlp_3_600 from mlp_2), the width changes first, then the depth, in
one command.
  elth transform mlp2.safetensors --to mlp_2_600 --dry-run
  elth transform r14_w8.safetensors --to cifar_resnet_14_16 --width-squeeze norm -o r14_w16.safetensors

Another dataset (--dataset, the paper's Appendix D): every weight and mask is kept when the
inputs fit the same weights (conv nets: the same number of channels, any image size; MLPs: the
same input size); when the class count differs, the output layer is replaced by a freshly
initialised one (seeded by --seed) with the old layer's density at random positions. With --to as
well, the depth changes first, then the dataset.

Examples:
  elth transform r20.safetensors --to cifar_resnet_56 --dry-run
  elth transform r32.safetensors --to cifar_resnet_56 --order interpolation -o r56.safetensors
  elth transform r56.safetensors --to cifar_resnet_32 --drop 5,6,7,8 -o r32.safetensors
  elth transform r20_svhn.safetensors --to cifar_resnet_32 --dataset cifar10 -o r32_cifar.safetensors
"""


_unit_list = index_list("unit indices", "1,2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ticket", metavar="TICKET", help="source ticket (.safetensors)")
    parser.add_argument("--to", metavar="MODEL", help="target model, e.g. cifar_resnet_56 (default: the ticket's)")
    parser.add_argument("--dataset", metavar="NAME",
                        help="move the ticket to this dataset (e.g. cifar10 for a ticket found on svhn; see above)")
    add_data_dir_argument(parser, "where --dataset's files are (ImageNet: to count its classes)")
    parser.add_argument(
        "--order", choices=ORDERS, default=None,
        help="how stretched stages order their copies (default: appending)",
    )
    parser.add_argument(
        "--units", type=_unit_list, default=None, metavar="1,2",
        help="replicate only these units in every stretched stage (default: units 1..n-1)",
    )
    parser.add_argument(
        "--squeeze", choices=SQUEEZE_MODES, default=None,
        help="which units shortened stages drop (default: consecutive, the latest ones)",
    )
    parser.add_argument(
        "--drop", type=_unit_list, default=None, metavar="5,6,7,8",
        help="drop exactly these units in every shortened stage",
    )
    parser.add_argument(
        "--plan", default=None, metavar="PLAN",
        help="explicit plan instead of a strategy, e.g. 0,1,2,1,2 or '0,1,2,1,2;0,1,1,2,2;0,1,2,2,2' (see above)",
    )
    parser.add_argument(
        "--block-mapping", default=None, metavar="MAP",
        help="the plan as the paper's code writes it, source -> targets, e.g. '0:0;1:1,3;2:2,4' (see above)",
    )
    parser.add_argument(
        "--random-replicas", action="store_true",
        help="ablation: give every replicated unit a random permutation of its source mask per layer "
        "(layerwise sparsity kept; the new mask selects the copied dense rewind weights, so the ticket must "
        "keep them, as tickets made by elth imp do)",
    )
    parser.add_argument(
        "--match-sparsity", action="store_true",
        help="beyond the paper: bring the new ticket to exactly the source ticket's sparsity by pruning "
        "(smallest rewind magnitudes) or restoring (largest dense rewind magnitudes) weights of the "
        "replicable units only; stem, head and transition units stay as copied (recorded in the provenance)",
    )
    parser.add_argument("--width-squeeze", choices=SQUEEZE_CRITERIA, default=None,
                        help="which units a narrower target keeps: norm (default), density, first (see above)")
    parser.add_argument("--no-rescale", action="store_true",
                        help="a wider target: keep the replicated units' outgoing weights as copied (default: "
                        "divided by the number of copies, which preserves the function at the rewind point)")
    parser.add_argument("--permute-replicas", action="store_true",
                        help="a wider target: give every copy of a unit a random permutation of its mask")
    parser.add_argument("--seed", type=seed_arg, default=0,
                        help="seed for --random-replicas and for a new output layer on --dataset (default 0)")
    parser.add_argument("-o", "--output", metavar="OUT.safetensors", help="where to write the new ticket")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the sparsity, write nothing")


def _width_step(source: Ticket, target: str) -> str | None:
    """The network the width changes to first (the source's depth at the target's width; the target
    itself when only the width changes), or None when the width stays (or the family declares none)."""
    a, b = parse_model_name(source.model), parse_model_name(target)
    if a.kind != b.kind or a.width == b.width:
        return None
    shape, classes = tuple(source.dataset.input_shape), source.dataset.num_classes
    if not build_model(source.model, shape, classes, seed=0).width_groups():
        return None  # a family without a width axis: the depth path says what it takes
    if a.depth == b.depth and a.fc_layers == b.fc_layers:
        return target
    middle = f"{a.kind}_{a.depth}_{b.width}"  # the family's <kind>_<D>_<W> name, checked below
    try:
        spec = parse_model_name(middle)
    except ElthError:  # the family spells its names otherwise
        spec = None
    if spec is None or (spec.kind, spec.depth, spec.width, spec.fc_layers) != (a.kind, a.depth, b.width, a.fc_layers):
        raise ElthError(f"{source.model} -> {target} changes the depth and the width, and {a.kind} names no network "
                        "of the source's depth at the target's width: change them in two steps")
    return middle


def _sparsity_line(source: Ticket, target: Ticket) -> str:
    (ks, ts), (kt, tt) = count(source.mask), count(target.mask)
    return (
        f"sparsity: source {100 * source.sparsity:.2f}% ({ks:,} of {ts:,} weights kept) -> "
        f"target {100 * target.sparsity:.2f}% ({kt:,} of {tt:,} weights kept)"
    )


def plan_table(source: Ticket, target: Ticket, plan: Plan, random_replicas: bool) -> list[str]:
    """One row per target unit (stage, target <- source, note) plus one per dropped source unit."""
    shape, classes = tuple(source.dataset.input_shape), source.dataset.num_classes
    src = model_view(source.model, shape, classes).structure
    tgt = model_view(target.model, shape, classes).structure
    replicas = set(replica_units(plan))
    rows = [("stage", "target unit", "", "source unit", "")]
    for s, stage in enumerate(plan):
        for j, i in enumerate(stage):
            note = "transition" if j == 0 else ""
            if (s, j) in replicas:
                note = "replica, random mask" if random_replicas else "replica"
            rows.append((str(s + 1), tgt.stages[s][j], "<-", src.stages[s][i], note))
        for i in sorted(set(range(len(src.stages[s]))) - set(stage)):
            rows.append((str(s + 1), "-", "", src.stages[s][i], "dropped"))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"stem ({', '.join(tgt.stem) or 'none'}) and head ({', '.join(tgt.head)}) copied unchanged")
    return lines


def run(args: argparse.Namespace) -> int:
    if args.output is None and not args.dry_run:
        raise ElthError("say where to write the new ticket with -o OUT.safetensors (or use --dry-run)")
    if args.plan is not None and (args.order or args.squeeze or args.units or args.drop):
        raise ElthError("--plan replaces the strategy options; drop --order/--units/--squeeze/--drop")
    if args.block_mapping is not None and (args.plan is not None or args.order or args.squeeze or args.units
                                           or args.drop):
        raise ElthError("--block-mapping is the plan: drop --plan/--order/--units/--squeeze/--drop")
    if args.to is None and args.dataset is None:
        raise ElthError("say what to transform the ticket into: --to MODEL (another depth), --dataset NAME, or both")
    if not args.dry_run:
        check_output_file(args.output, "-o")
    new_dataset = dataset_info(args.dataset, args.data_dir) if args.dataset is not None else None
    source = load_ticket(args.ticket)
    result, plan = source, None
    width_options = args.width_squeeze or args.no_rescale or args.permute_replicas
    middle = _width_step(source, args.to) if args.to is not None else None
    depth_options = (args.plan or args.block_mapping or args.order or args.squeeze or args.units or args.drop
                     or args.random_replicas or args.match_sparsity)
    if middle is not None:  # the width first (then the depth, when it changes too)
        if middle == args.to and depth_options:
            raise ElthError("the depth options (--plan, --block-mapping, --order, --units, --squeeze, --drop, "
                            "--random-replicas, --match-sparsity) do not apply to a change of width")
        width_plan = make_width_plan(source, middle, args.width_squeeze or SQUEEZE_CRITERIA[0])
        result = apply_width_plan(source, middle, width_plan, rescale=not args.no_rescale,
                                  permute_replicas=args.permute_replicas, seed=args.seed)
        print(f"{source.model} -> {result.model} (width)")
        print("width plan, each layer's units <- the source's:\n" + format_width_plan(width_plan))
    elif width_options:
        raise ElthError("--width-squeeze, --no-rescale and --permute-replicas need --to a network of another width")
    depth_source = result
    if args.to is not None and (middle is None or result.model != args.to):
        explicit = args.plan
        if args.block_mapping is not None:
            explicit = format_plan(block_mapping_plan(args.block_mapping, depth_source.model, args.to))
        result = transform(
            depth_source, args.to, plan=explicit, order=args.order or APPENDING,
            squeeze_mode=args.squeeze or CONSECUTIVE, units=args.units, drop=args.drop,
            random_replicas=args.random_replicas, seed=args.seed,
            source_path=str(args.ticket) if depth_source is source else None,
        )
        if args.match_sparsity:
            result = match_sparsity(result, source.sparsity)
            m = result.provenance["match_sparsity"]
            print(f"sparsity matched: {100 * m['before']:.2f}% -> {100 * m['after']:.2f}% "
                  f"({m['pruned']:,} weights pruned, {m['restored']:,} restored in the replicable units)")
        plan_text = result.provenance["plan"]
        plan = parse_plan(plan_text, plan_text.count(";") + 1)
        print(f"{depth_source.model} -> {result.model}")
        print(f"plan: {plan_text}")
    elif (args.plan or args.block_mapping or args.order or args.squeeze or args.units or args.drop
          or args.random_replicas or args.match_sparsity):
        raise ElthError("the depth options (--plan, --block-mapping, --order, --units, --squeeze, --drop, "
                        "--random-replicas, --match-sparsity) need --to")
    if new_dataset is not None:
        depth_done = result
        result = to_dataset(result, new_dataset, seed=args.seed)
        print(f"{depth_done.dataset.name} -> {result.dataset.name}: "
              + ("output layer replaced" if result.provenance["replaced"] else "weights and masks kept"))
    if args.dry_run:
        if plan is not None:
            print("\n".join(plan_table(depth_source, result, plan, args.random_replicas)))
        print(_sparsity_line(source, result))
        print("dry run: nothing written")
        return 0
    path = save_ticket(result, args.output)
    print(_sparsity_line(source, result))
    print(f"wrote {path}")
    return 0
