"""The Section 4.1 ablations: transfers with chosen units, drops and random replicas, Figure 3's controls."""
import pytest
import torch

from elth.cli import main
from elth.data.base import DatasetInfo
from elth.experiments import read_results
from elth.experiments.aggregate import aggregate
from elth.experiments.shipped import get_experiment
from elth.experiments.spec import Setup, SpecError, TicketRun, Transfer, expand
from elth.masks import PruningError, full_mask, magnitude_prune
from elth.methods import curve_label
from elth.models import build_model
from elth.runs import run_dir
from elth.tickets import from_model, load_ticket
from elth.workflows.baseline_tickets import permute_ticket_mask

R14, R20 = "cifar_resnet_14_8", "cifar_resnet_20_8"


def _setup(**kw) -> Setup:
    base = dict(dataset="synthetic_3x8x8", members=(R14, R20), levels=(1,), seeds=1)
    base.update(kw)
    return Setup(**base)


def test_strategy_strings_name_every_choice():
    stretch = dict(target=R20, level=1, seed=0, source=R14, order="interpolation", squeeze_mode="consecutive")
    assert TicketRun("ett", **stretch).strategy == "interpolation"
    assert TicketRun("ett", **stretch, units=(1,)).strategy == "interpolation 1"
    assert TicketRun("ett", **stretch, units=(1,), random_replicas=True).strategy == "interpolation 1 random"
    squeeze = dict(target=R14, level=1, seed=0, source=R20, order="appending", squeeze_mode="interval")
    assert TicketRun("ett", **squeeze).strategy == "interval"
    assert TicketRun("ett", **squeeze, drop=(1,)).strategy == "drop 1"
    assert TicketRun("snip", R20, 1, 0).strategy == ""


def test_default_runs_keep_their_identity():
    """Runs without strategy details hash as they did before those fields existed."""
    run = TicketRun("ett", R20, 2, 1, R14, "appending", "consecutive")
    old_fields = {"method": "ett", "target": R20, "level": 2, "seed": 1, "source": R14, "order": "appending",
                  "squeeze_mode": "consecutive"}
    assert run.hparams() == old_fields
    detailed = TicketRun("ett", R20, 2, 1, R14, "appending", "consecutive", units=(1,))
    assert detailed.hparams() == {**old_fields, "units": [1]}
    assert run_dir("/store", "ticket", run.hparams()) != run_dir("/store", "ticket", detailed.hparams())


def test_transfer_baselines_follow_the_transfers():
    transfers = (Transfer(R14, R20, units=(1,)), Transfer(R14, R20, order="interpolation"), Transfer(R20, R14, drop=(2,)))
    plan = expand(_setup(transfers=transfers, baselines=("ett-reinit", "ett-random", "snip-extra", "snip")))
    by_method = {}
    for r in plan.tickets:
        by_method.setdefault(r.method, []).append(r)
    assert len(by_method["ett"]) == 3
    # one control per transfer; snip-extra only for the two stretches; snip once per member
    assert sorted(r.strategy for r in by_method["ett-reinit"]) == ["appending 1", "drop 2", "interpolation"]
    assert sorted(r.strategy for r in by_method["ett-random"]) == ["appending 1", "drop 2", "interpolation"]
    assert sorted(r.strategy for r in by_method["snip-extra"]) == ["appending 1", "interpolation"]
    assert sorted(r.target for r in by_method["snip"]) == [R14, R20]
    assert len(set(plan.tickets)) == len(plan.tickets)


@pytest.mark.parametrize("transfer, message", [
    (Transfer(R20, R14, units=(1,)), "units to replicate given for a squeeze"),
    (Transfer(R14, R20, drop=(1,)), "units to drop given for a stretch"),
    (Transfer(R20, R14, random_replicas=True), "random replicas need a stretch"),
])
def test_misplaced_strategy_details_are_errors(transfer, message):
    with pytest.raises(SpecError, match=message):
        expand(_setup(transfers=(transfer,)))


@pytest.mark.parametrize("name", ["ett_baselines", "replicate_units", "earlier_later"])
def test_ablation_specs_mirror_the_paper(name):
    paper = get_experiment(name).setups("paper")[0]
    assert set(paper.members) == {"cifar_resnet_32", "cifar_resnet_56"}
    assert paper.dataset == "cifar10" and paper.seeds == 3 and paper.levels == tuple(range(1, 11))
    strategies = {TicketRun("ett", t.target, 1, 0, t.source, t.order, t.squeeze_mode, t.units, t.drop,
                            t.random_replicas).strategy for t in paper.expand_transfers()}
    expected = {
        "ett_baselines": {"appending"},
        "replicate_units": {"appending 1,2,3,4", "interpolation 1,2,3,4", "appending 1,2", "interpolation 1,2",
                            "appending 1", "interpolation 1,2,3,4 random"},
        "earlier_later": {"appending 1,2", "interpolation 1,2", "appending 2,3", "interpolation 2,3",
                          "appending 3,4", "interpolation 3,4", "drop 1,2,3,4", "drop 5,6,7,8", "drop 1,3,5,7",
                          "drop 2,4,6,8"},
    }[name]
    assert strategies == expected


def _ticket(model_name: str, sparsity: float = 0.6):
    model = build_model(model_name, (3, 8, 8), 4, seed=0)
    weights = dict(model.named_parameters())
    mask = magnitude_prune(weights, full_mask(model), sparsity, list(full_mask(model)))
    return from_model(model, DatasetInfo("synthetic", (3, 8, 8), 4), mask)


def test_permuted_masks_keep_layer_counts_and_the_rewind_values():
    ticket = _ticket(R14)
    permuted = permute_ticket_mask(ticket, seed=3)
    assert permuted.mask.keys() == ticket.mask.keys()
    moved = 0
    for k, m in ticket.mask.items():
        p = permuted.mask[k]
        assert int(p.sum()) == int(m.sum())
        moved += int((p != m).sum())
        # unpruned positions carry the real rewind value, pruned ones zero
        assert torch.equal(permuted.state[k], ticket.dense[k] * p.to(ticket.dense[k].dtype))
    assert moved > 0
    again = permute_ticket_mask(ticket, seed=3)  # seeded: the same draw
    assert all(torch.equal(again.mask[k], permuted.mask[k]) for k in permuted.mask)
    ticket.dense = None
    with pytest.raises(PruningError, match="dense rewind weights"):
        permute_ticket_mask(ticket, seed=3)


def test_an_ablation_runs_end_to_end_and_labels_its_curves(tmp_path):
    out = tmp_path / "out"
    code = main(["experiment", "earlier_later", "--scale", "smoke", "--threads", "1", "--root", str(tmp_path / "store"),
                 "--out", str(out), "--no-progress"])
    assert code == 0
    rows = read_results(out)
    ett = {(r.target, r.strategy) for r in rows if r.method == "ett"}
    assert ett == {(R20, "interpolation 1"), (R14, "drop 1"), (R14, "drop 2")}
    # each transfer's ticket was made as its strategy says: dropping unit 1 or 2 of each stage
    for r in rows:
        if r.method == "ett" and r.strategy.startswith("drop"):
            t = load_ticket(r.ticket)
            assert t.provenance["strategy"]["drop"] == [int(r.strategy.split()[1])]
    labels = {curve_label(p.key) for p in aggregate(rows) if p.method == "ett"}
    assert labels == {"ETT \u2190 ResNet-14 (w8) (interpolation 1)", "ETT \u2190 ResNet-20 (w8) (drop 1)",
                      "ETT \u2190 ResNet-20 (w8) (drop 2)"}
    report = (out / "report.md").read_text()
    assert "ResNet-20 (w8) (drop 2)" in report
