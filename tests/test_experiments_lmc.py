"""Linear mode connectivity inside experiments (the paper's Figure 8)."""
import pytest

from elth.experiments import get_experiment, read_results, run_experiment
from elth.experiments.report import write_report
from elth.experiments.results import read_lmc
from elth.experiments.spec import Setup, SpecError, Transfer, expand

SMOKE = get_experiment("smoke")


def _setup(**kw) -> Setup:
    base = dict(dataset="synthetic_1x8x8_n128", members=("mlp_1", "mlp_2", "mlp_3"), levels=(1,), preset="smoke",
                transfers=(Transfer("mlp_2", "mlp_3"), Transfer("mlp_2", "mlp_1")), seeds=1, lmc_levels=(1,),
                lmc_points=3)
    base.update(kw)
    return Setup(**base)


def test_lmc_runs_cover_each_target_imp_and_its_etts():
    plan = expand(_setup(transfers=(Transfer("mlp_2", "mlp_3"), Transfer("mlp_1", "mlp_3"), Transfer("mlp_3", "mlp_1")),
                         seeds=2))
    runs = {(r.target, r.method, r.ticket.source if r.ticket else "", r.seed) for r in plan.lmc}
    assert runs == {(t, m, s, seed) for seed in (0, 1) for t, m, s in
                    [("mlp_3", "imp", ""), ("mlp_3", "ett", "mlp_2"), ("mlp_3", "ett", "mlp_1"),
                     ("mlp_1", "imp", ""), ("mlp_1", "ett", "mlp_3")]}
    # every ETT whose path is measured is also a ticket run of the plan (its first copy is that training)
    assert {r.ticket for r in plan.lmc if r.ticket} <= set(plan.tickets)
    assert plan.total == len(plan.imp) + len(plan.tickets) + len(plan.lmc)
    with pytest.raises(SpecError, match="not a compared level"):
        expand(_setup(lmc_levels=(2,)))
    with pytest.raises(SpecError, match="at least 2 points"):
        expand(_setup(lmc_points=1))


def test_lmc_paths_are_measured_cached_and_reported(tmp_path):
    setup = _setup(members=("mlp_2", "mlp_3"), transfers=(Transfer("mlp_2", "mlp_3"),))
    out = tmp_path / "out"
    outcome = run_experiment(SMOKE, "smoke", root=tmp_path / "store", out_dir=out, setups=(setup,), threads=1,
                             progress=False)
    assert outcome.trained == expand(setup).total
    paths = {(d["method"], d["source"]): d for d in read_lmc(out)}
    assert set(paths) == {("imp", ""), ("ett", "mlp_2")}
    rows = {(r.method, r.target): r for r in read_results(out)}
    ett = paths[("ett", "mlp_2")]
    assert ett["alphas"] == [0.0, 0.5, 1.0] and ett["label"] == "ETT \u2190 MLP-2"
    # The first copy is the ETT ticket's own training (shared through the store); an MLP has no BN, so
    # the path starts exactly at the accuracy the results table gives that ticket.
    assert ett["test_errors"][0] == pytest.approx(1 - rows[("ett", "mlp_3")].accuracy, abs=1e-9)
    assert ett["instability"] == pytest.approx(max(ett["test_errors"]) - (ett["test_errors"][0] + ett["test_errors"][-1]) / 2)
    assert ett["data_seeds"][0] != ett["data_seeds"][1]
    # read back, not measured again
    again = run_experiment(SMOKE, "smoke", root=tmp_path / "store", out_dir=tmp_path / "again", setups=(setup,),
                           threads=1, progress=False)
    assert again.trained == 0 and read_lmc(tmp_path / "again") == read_lmc(out)
    report = write_report(out).read_text()
    assert "## Linear mode connectivity" in report and "ETT \u2190 MLP-2" in report
    assert (out / "lmc_mlp_3_level1.png").read_bytes()[:4] == b"\x89PNG"
