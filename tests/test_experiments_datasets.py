"""Transfers across datasets inside experiments (the paper's Appendix D, Table 6)."""
import pytest

from elth.experiments import get_experiment, read_results, run_experiment
from elth.experiments.report import report_figures, write_report
from elth.experiments.spec import Setup, SpecError, Transfer, expand
from elth.tickets import load_ticket

SMOKE = get_experiment("smoke")
A, B = "synthetic_1x8x8_n128", "synthetic_1x8x8_n64"


def _part(dataset: str, other: str, **kw) -> Setup:
    base = dict(dataset=dataset, members=("mlp_2", "mlp_3"), levels=(1,), preset="smoke", seeds=1, transfers=(
        Transfer("mlp_2", "mlp_3"), Transfer("mlp_2", "mlp_2", source_dataset=other),
        Transfer("mlp_2", "mlp_3", source_dataset=other)))
    base.update(kw)
    return Setup(**base)


def test_sources_from_another_dataset_get_their_own_imp_runs():
    plan = expand(_part(A, B))
    assert sorted((r.model, r.dataset) for r in plan.imp) == [("mlp_2", ""), ("mlp_2", B), ("mlp_3", "")]
    ett = sorted((r.source, r.target, r.source_dataset, r.strategy) for r in plan.tickets)
    assert ett == [("mlp_2", "mlp_2", B, f"from {B}"), ("mlp_2", "mlp_3", "", "appending"),
                   ("mlp_2", "mlp_3", B, f"appending from {B}")]
    with pytest.raises(SpecError, match="the same network, from the same dataset"):
        expand(_part(A, B, transfers=(Transfer("mlp_2", "mlp_2"),)))


def test_both_ways_run_once_per_imp_and_report_per_dataset(tmp_path):
    out = tmp_path / "out"
    outcome = run_experiment(SMOKE, "smoke", root=tmp_path / "store", out_dir=out, setups=(_part(A, B), _part(B, A)),
                             threads=1, progress=False)
    # IMP on each network and dataset once (each part needs mlp_2 on both datasets), three tickets per part
    assert outcome.trained == 4 + 6
    rows = read_results(out)
    assert {(r.dataset, r.target) for r in rows if r.method == "imp"} == {
        (d, m) for d in (A, B) for m in ("mlp_2", "mlp_3")}
    moved = [r for r in rows if r.method == "ett" and "from" in r.strategy]
    assert len(moved) == 4
    for r in moved:
        t = load_ticket(r.ticket)
        assert t.dataset.name == r.dataset and t.provenance["method"] == "dataset transfer"
        assert t.provenance["from_dataset"]["name"] != r.dataset
        if r.target == "mlp_2":  # moved as it is: the source's IMP mask on the same network
            other = B if r.dataset == A else A
            src = load_ticket([x for x in rows if (x.dataset, x.target, x.method, x.level) == (other, "mlp_2", "imp", 1)][0].ticket)
            assert all(bool((t.mask[k] == src.mask[k]).all()) for k in t.mask)
    report = write_report(out)
    text = report.read_text()
    assert f"# On `{A}`" in text and f"# On `{B}`" in text
    figures = report_figures(report)
    assert [f.name for f in figures] == [f"accuracy_vs_sparsity_{A}.png", f"accuracy_vs_sparsity_{B}.png"]
    assert all(f.read_bytes()[:4] == b"\x89PNG" for f in figures)


def test_table6_spec_follows_the_paper():
    parts = get_experiment("dataset_table6").setups("paper")
    assert [p.dataset for p in parts] == ["svhn", "cifar10"]
    for p, other in zip(parts, ("cifar10", "svhn")):
        assert {(t.source, t.target, t.source_dataset) for t in p.expand_transfers()} == {
            ("cifar_resnet_20", "cifar_resnet_32", None), ("cifar_resnet_20", "cifar_resnet_20", other),
            ("cifar_resnet_20", "cifar_resnet_32", other)}


def test_labels_say_the_dataset_when_an_experiment_trains_on_several(tmp_path):
    from elth.experiments.runner import build_graph

    _, _, graph = build_graph(get_experiment("dataset_table6"), "smoke", root=tmp_path)
    labels = [n.label for n in graph.nodes]
    assert len(set(labels)) == len(labels)  # the parts' runs of the same name are told apart
    assert all(n.label.endswith(f" (on {n.dataset})") or f" on {n.dataset} " in n.label for n in graph.nodes)
    _, _, single = build_graph(get_experiment("smoke"), "smoke", root=tmp_path)
    assert all(n.label == n.run.label for n in single.nodes)
