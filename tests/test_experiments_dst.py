"""Dynamic sparse training as experiment baselines (the paper's Tables 2 and 3)."""
import dataclasses

import pytest

from elth.experiments import get_experiment, read_results, run_experiment
from elth.experiments.aggregate import aggregate
from elth.experiments.compute import dst_comparisons
from elth.experiments.spec import Setup, SpecError, Transfer, expand
from elth.tickets import load_ticket

SMOKE = get_experiment("smoke")


def _setup(**kw) -> Setup:
    base = dict(dataset="synthetic_1x8x8_n128", members=("mlp_1", "mlp_2", "mlp_3"), levels=(1,), preset="smoke",
                transfers=(Transfer("mlp_2", "mlp_3"),), seeds=1)
    base.update(kw)
    return Setup(**base)


def test_baseline_targets_limit_the_baselines():
    plan = expand(_setup(baselines=("dpf", "snip"), baseline_targets=("mlp_3",)))
    assert sorted((r.method, r.target) for r in plan.tickets) == [("dpf", "mlp_3"), ("ett", "mlp_3"), ("snip", "mlp_3")]
    assert len(plan.imp) == 3  # IMP still runs on every member
    with pytest.raises(SpecError, match="baseline target 'mlp_9' is not a member"):
        expand(_setup(baselines=("dpf",), baseline_targets=("mlp_9",)))


def test_dst_baselines_train_from_scratch_at_the_imp_sparsity(tmp_path):
    setup = _setup(members=("mlp_2", "mlp_3"), baselines=("dpf", "rigl"), baseline_targets=("mlp_3",))
    run_experiment(SMOKE, "smoke", root=tmp_path / "store", out_dir=tmp_path / "out", setups=(setup,), threads=1,
                   progress=False)
    rows = {(r.method, r.target, r.level): r for r in read_results(tmp_path / "out")}
    imp = rows[("imp", "mlp_3", 1)]
    for method in ("dpf", "rigl"):
        r = rows[(method, "mlp_3", 1)]
        # matched to the target's IMP ticket (to rounding: DST keeps whole weights per layer)
        assert r.sparsity == pytest.approx(imp.sparsity, abs=2e-3)
        assert r.mask_cost_flops == 0.0 and r.train_flops > 0
        # trained from scratch over the whole protocol, not from a rewind point
        assert r.train_steps == rows[("dense", "mlp_3", 0)].train_steps
        ticket = load_ticket(r.ticket)
        assert ticket.provenance["method"] == method and ticket.model == "mlp_3"
    # DPF computes dense gradients every step: it costs more than RigL's sparse steps
    assert rows[("dpf", "mlp_3", 1)].train_flops > rows[("rigl", "mlp_3", 1)].train_flops
    # Section 4.5's accounting: E-LTH = IMP on the source (mask cost + its ticket's training) + the ETT's training
    comparisons = {c.method: c for c in dst_comparisons(aggregate(list(rows.values())))}
    assert set(comparisons) == {"dpf", "rigl"}
    c = comparisons["dpf"]
    src, ett = rows[("imp", "mlp_2", 1)], rows[("ett", "mlp_3", 1)]
    assert [r.network for r in c.rows] == ["mlp_3"] and c.rows[0].elth.method == "ett"
    assert c.elth_flops == pytest.approx(src.mask_cost_flops + src.train_flops + ett.train_flops)
    assert c.dst_flops == pytest.approx(rows[("dpf", "mlp_3", 1)].train_flops)


def test_dst_baselines_train_in_fused_groups_with_the_results_of_training_alone(tmp_path):
    """DPF runs of one target (two levels x two seeds) train as one fused group, and so do RigL's; the
    MLPs train bit for bit as they would one by one (--fuse 1), so every row is the same."""
    setup = _setup(members=("mlp_2", "mlp_3"), levels=(1, 2), seeds=2, baselines=("dpf", "rigl"),
                   baseline_targets=("mlp_3",))
    runs = {}
    for fuse in (None, 1):
        runs[fuse] = run_experiment(SMOKE, "smoke", root=tmp_path / f"store-{fuse}", out_dir=tmp_path / f"out-{fuse}",
                                    setups=(setup,), threads=1, progress=False, fuse=fuse)
    dpf_dirs = list((tmp_path / "store-None").glob("dst-*"))
    assert len(dpf_dirs) == 8  # 4 DPF and 4 RigL runs
    # Trainings in fused groups: 4 IMP runs (2 networks x 2 seeds), 4 ETT tickets, 4 DPF and 4 RigL runs.
    assert runs[None].fused == 16 and runs[1].fused == 0
    key = lambda r: (r.method, r.target, r.source, r.level, r.seed)
    rows = {fuse: {key(r): dataclasses.replace(r, ticket="") for r in run.rows} for fuse, run in runs.items()}
    assert rows[None] == rows[1]
    assert sum(1 for k in rows[1] if k[0] == "dpf") == 4


@pytest.mark.parametrize("name", ["dpf_table3", "rigl_table2"])
def test_dst_specs_follow_the_paper(name):
    paper = get_experiment(name).setups("paper")[0]
    plan = expand(paper)
    pairs = sorted({(r.source, r.target) for r in plan.tickets if r.method == "ett"})
    if name == "dpf_table3":
        assert pairs == [("cifar_resnet_14", "cifar_resnet_20"), ("cifar_resnet_20", "cifar_resnet_32"),
                         ("cifar_resnet_32", "cifar_resnet_56")]
        assert {r.method for r in plan.tickets} == {"ett", "dpf"} and paper.levels == (10, 13)
    else:
        assert pairs == [("imagenet_resnet_26", "imagenet_resnet_18"), ("imagenet_resnet_26", "imagenet_resnet_34")]
        assert {r.target for r in plan.tickets if r.method == "rigl-5x"} == set(paper.members)
        assert paper.levels == (6,) and paper.dataset == "imagenet"
