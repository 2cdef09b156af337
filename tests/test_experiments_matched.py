"""A spec's `match_sparsity`: plain and sparsity-matched ETT tickets side by side, end to end."""
import dataclasses
import json

import pytest

from elth.experiments import get_experiment, read_results, run_experiment
from elth.experiments.report import write_report
from elth.masks import count
from elth.tickets import load_ticket


def test_matched_ett_tickets_have_their_sources_sparsity(tmp_path):
    (setup,) = get_experiment("demo").setups("smoke")
    setup = dataclasses.replace(setup, baselines=(), match_sparsity=True, levels=(2,))
    run_experiment(get_experiment("demo"), "smoke", root=tmp_path / "store", out_dir=tmp_path / "out",
                   seeds=1, progress=False, threads=1, setups=(setup,))
    rows = read_results(tmp_path / "out")
    etts = {(r.target, r.strategy): r for r in rows if r.method == "ett"}
    # MLP-1 has no unit besides its first layer, so nothing there can be matched
    assert set(etts) == {("mlp_1", "consecutive"), ("mlp_3", "appending"), ("mlp_3", "appending matched")}
    imp_source = next(r for r in rows if r.method == "imp" and r.target == "mlp_2" and r.level == 2)
    plain, matched = etts[("mlp_3", "appending")], etts[("mlp_3", "appending matched")]
    ticket = load_ticket(matched.ticket)
    _, total = count(ticket.mask)
    assert abs(ticket.sparsity - imp_source.sparsity) <= 0.5 / total
    assert ticket.provenance["match_sparsity"]["wanted"] == pytest.approx(imp_source.sparsity)
    assert abs(plain.sparsity - imp_source.sparsity) > 0.5 / total  # the plain one drifted
    meta = json.loads((tmp_path / "out" / "experiment.json").read_text())
    assert meta["parts"][0]["match_sparsity"] is True
    text = write_report(tmp_path / "out").read_text()
    assert "MLP-2 (appending matched)" in text and "| MLP-3 | MLP-2 | 2 |" in text
