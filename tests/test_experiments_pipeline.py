"""The whole pipeline at smoke scale: `elth experiment`, the store's reuse, workers, failures."""
import dataclasses
import json
import shutil
import sys

import pytest

from elth.cli import main
from elth.experiments import get_experiment, read_results, run_experiment
from elth.experiments.kinds import ticket as ticket_kind
from elth.experiments.runner import ExperimentFailed
from elth.experiments.spec import Setup, Transfer, expand
from elth.tickets import load_ticket

SMOKE = get_experiment("smoke")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("smoke")
    store, out = base / "store", base / "out"
    code = main(["experiment", "smoke", "--scale", "smoke", "--seeds", "1", "--threads", "1",
                 "--root", str(store), "--out", str(out), "--no-progress"])
    assert code == 0
    return store, out


def _key(r):
    return (r.target, r.method, r.source, r.level, r.seed)


def test_smoke_experiment_writes_the_table_and_the_report(smoke_run):
    store, out = smoke_run
    setup = SMOKE.setups("smoke")[0].with_seeds(1)
    rows = read_results(out)
    members = setup.members
    imp_levels = setup.imp_levels
    # IMP: level 0 is the dense network, then one row per level, for each member.
    assert sorted((r.target, r.level) for r in rows if r.method in ("dense", "imp")) == sorted(
        (m, lv) for m in members for lv in range(imp_levels + 1))
    assert {r.level for r in rows if r.method == "dense"} == {0}
    plan = expand(setup)
    tickets = {(r.target, r.method, r.source, r.level) for r in rows if r.method not in ("dense", "imp")}
    assert tickets == {(t.target, t.method, t.source, t.level) for t in plan.tickets}
    assert {r.source for r in rows if r.method == "ett"} == {"mlp_2"}
    assert {r.strategy for r in rows if r.method == "ett"} == {"appending", "consecutive"}
    by_key = {_key(r): r for r in rows}
    for r in rows:
        assert 0.0 <= r.accuracy <= 1.0 and r.train_steps > 0 and r.train_flops > 0
        if r.method in ("snip", "random"):
            # sparsity-matched to the target's IMP ticket at the same level, to the weight
            imp = by_key[(r.target, "imp", "", r.level, r.seed)]
            assert r.sparsity == pytest.approx(imp.sparsity, abs=1e-4)
        if r.method == "ett":
            # the ticket's own sparsity (a squeeze or stretch moves it off the source level's)
            assert r.sparsity != pytest.approx(1 - 0.8 ** r.level, abs=1e-4)
            src = by_key[(r.source, "imp", "", r.level, r.seed)]
            assert r.mask_cost_flops == pytest.approx(src.mask_cost_flops)
    imp = sorted((r for r in rows if r.target == "mlp_2" and r.method in ("dense", "imp")), key=lambda r: r.level)
    assert all(b.mask_cost_flops == pytest.approx(a.mask_cost_flops + a.train_flops) for a, b in zip(imp, imp[1:]))
    assert (out / "results.csv").is_file() and (out / "report.md").is_file()
    assert (out / "accuracy_vs_sparsity.png").stat().st_size > 10_000
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["runs"]["failed"] == 0 and meta["runs"]["trained"] == plan.total
    assert 0 < meta["busy_seconds"] <= meta["wall_seconds"]  # one invocation: its runs trained within it


def test_fused_ticket_training_gives_the_results_of_training_one_by_one(smoke_run, tmp_path):
    """The smoke run trained its tickets in fused groups (the CPU default); one by one (--fuse 1)
    the MLP tickets train bit for bit alike, so every result is the same."""
    store, out = smoke_run
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["runs"]["fused"] >= 2
    alone = run_experiment(SMOKE, "smoke", root=tmp_path / "store", out_dir=tmp_path / "out", seeds=1,
                           progress=False, threads=1, fuse=1)
    assert alone.fused == 0
    untimed = lambda rows: sorted((dataclasses.replace(r, ticket="") for r in rows), key=_key)
    assert untimed(alone.rows) == untimed(read_results(out))


def test_a_failing_fused_group_leaves_its_runs_to_train_one_by_one(smoke_run, tmp_path, monkeypatch, capsys):
    store, out = smoke_run

    def broken(*args, **kwargs):
        raise RuntimeError("a fused group that breaks")

    monkeypatch.setattr(ticket_kind, "train_ticket_group_job", broken)
    outcome = run_experiment(SMOKE, "smoke", root=tmp_path / "store", out_dir=tmp_path / "out", seeds=1,
                             progress=True, threads=1, fuse=3)
    assert outcome.fused == 0 and not outcome.failures
    assert "its runs go on one by one" in capsys.readouterr().err
    untimed = lambda rows: sorted((dataclasses.replace(r, ticket="") for r in rows), key=_key)
    assert untimed(outcome.rows) == untimed(read_results(out))


def test_a_finished_experiment_is_read_back_without_training(smoke_run, monkeypatch, tmp_path):
    """Also after a fused run: neither `train` nor `train_group` is called."""
    store, out = smoke_run

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("elth") and hasattr(module, "train"):
            if getattr(module.train, "__name__", "") == "train":
                monkeypatch.setattr(module, "train", no_training)
        if hasattr(module, "train_group"):
            monkeypatch.setattr(module, "train_group", no_training)
    outcome = run_experiment(SMOKE, "smoke", root=store, out_dir=tmp_path, seeds=1, progress=False)
    assert outcome.trained == 0 and outcome.cached == expand(SMOKE.setups("smoke")[0].with_seeds(1)).total
    assert sorted(outcome.rows, key=_key) == sorted(read_results(out), key=_key)
    # the time its runs took is the store's, not this (training-free) invocation's
    first = json.loads((out / "experiment.json").read_text())
    assert outcome.busy_seconds == pytest.approx(first["busy_seconds"], abs=0.1) and outcome.seconds < outcome.busy_seconds


def test_interrupted_work_is_redone_alone(smoke_run, tmp_path):
    store, out = smoke_run
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    # As if killed after the ticket was made but before its training finished.
    ticket_dir = sorted(copy.glob("ticket-*"))[0]
    (ticket_dir / "result.json").unlink()
    ticket = load_ticket(ticket_dir / "ticket.safetensors")
    for train_dir in copy.glob("train-*"):
        if json.loads((train_dir / "hparams.json").read_text())["ticket"] == ticket.content_hash():
            shutil.rmtree(train_dir)
    outcome = run_experiment(SMOKE, "smoke", root=copy, out_dir=tmp_path / "out", seeds=1, progress=False)
    assert outcome.trained == 1
    ours = {_key(r): dataclasses.replace(r, ticket="") for r in outcome.rows}
    assert ours == {_key(r): dataclasses.replace(r, ticket="") for r in read_results(out)}


def test_a_damaged_record_is_one_clear_error_and_deleting_it_redoes_that_work(smoke_run, tmp_path, capsys):
    store, out = smoke_run
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    imp_run = next(d for d in sorted(copy.glob("imp-*"))
                   if json.loads((d / "hparams.json").read_text())["model"] == "mlp_2")
    level = imp_run / "level_1" / "result.json"
    ticket_result = sorted(copy.glob("ticket-*"))[0] / "result.json"
    level.write_text('{"test_acc')
    ticket_result.write_text("[1, 2]")
    argv = ["experiment", "smoke", "--scale", "smoke", "--seeds", "1", "--root", str(copy), "--out",
            str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"elth experiment: error: {level}: a damaged record (not JSON); delete it to have that work done again")
    level.unlink()
    assert main(argv) == 2  # the next one, named as clearly
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"elth experiment: error: {ticket_result}: a damaged record (AttributeError: 'list' object has no attribute "
        "'get'); delete it to have that work done again")
    ticket_result.unlink()
    # Deleted, both are made again (the level already by the call that met the damaged ticket record,
    # when the scheduler reaches that record after starting the IMP run) and the table is what it was.
    outcome = run_experiment(SMOKE, "smoke", root=copy, out_dir=tmp_path / "out", seeds=1, progress=False)
    assert outcome.trained >= 1 and level.is_file() and ticket_result.is_file()
    ours = {_key(r): dataclasses.replace(r, ticket="") for r in outcome.rows}
    assert ours == {_key(r): dataclasses.replace(r, ticket="") for r in read_results(out)}


@pytest.mark.slow
def test_two_workers_give_the_same_results(smoke_run, tmp_path):
    _, out = smoke_run
    # Part of the smoke experiment, in a new store: every run is done again, in two spawned processes.
    part = dataclasses.replace(SMOKE.setups("smoke")[0], members=("mlp_2", "mlp_3"), levels=(1,),
                               baselines=("random",), seeds=1)
    outcome = run_experiment(SMOKE, "smoke", root=tmp_path / "store", out_dir=tmp_path / "out", workers=2,
                             threads=1, setups=(part,), progress=False)
    assert outcome.trained == expand(part).total == 5
    ours = {_key(r): r for r in read_results(tmp_path / "out")}
    theirs = {_key(r): r for r in read_results(out)}
    assert set(ours) <= set(theirs) and len(ours) == 2 * 3 + 1 + 2
    for k, r in ours.items():
        assert dataclasses.replace(r, ticket="") == dataclasses.replace(theirs[k], ticket="")


def test_failing_runs_are_reported_and_the_others_kept(smoke_run, tmp_path, capsys):
    store, _ = smoke_run
    smoke = SMOKE.setups("smoke")[0]
    # MLP-1's single hidden layer is its transition unit: there is nothing to stretch into MLP-2.
    bad = Setup(dataset=smoke.dataset, members=("mlp_1", "mlp_2"), levels=(1,), preset="smoke",
                transfers=(Transfer("mlp_1", "mlp_2"), Transfer("mlp_2", "mlp_1")), seeds=1)
    with pytest.raises(ExperimentFailed, match="1 of 4 runs failed.*ett mlp_2 <- mlp_1"):
        run_experiment(SMOKE, "smoke", root=store, out_dir=tmp_path, setups=(bad,), threads=1)
    err = capsys.readouterr().err
    # an expected failure (an ElthError) is its one-line message; only unexpected ones carry a traceback
    assert "run failed: ett mlp_2 <- mlp_1" in err and "mlp_1 has no unit to replicate" in err and "Traceback" not in err
    rows = read_results(tmp_path)
    assert {(r.method, r.target) for r in rows if r.method == "ett"} == {("ett", "mlp_1")}


def test_cli_errors_and_listing(capsys):
    assert main(["experiment", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "resnet_family" in listing and "fc_table5" in listing and "Table 5" in listing
    assert main(["experiment", "fc_table5", "--scale", "cpu", "--dry-run"]) == 0
    # 9 IMP runs; per seed 6 ETT and 6 sparsity-matched ETT tickets and 5 baselines x 3 members x 4 levels
    assert "225 runs in all" in capsys.readouterr().out
    assert main(["experiment", "smoke", "--scale", "paper"]) == 2
    assert "no 'paper' scale" in capsys.readouterr().err
    assert main(["experiment"]) == 2


def test_a_group_member_held_elsewhere_is_left_to_its_holder_and_the_rest_train_fused(
        smoke_run, tmp_path, monkeypatch):
    """Between the scheduler's pick and the group taking its leases, another worker takes one
    member: the group trains the others fused, the held run waits for its holder and, once that
    holder lets go without finishing it, trains alone. The results are those of the run that
    trained everything one by one."""
    import threading

    from elth.experiments import leased
    from elth.experiments.attempts import read_attempts
    from elth.experiments.lease import Lease

    real = leased.run_group_task
    stolen: list[str] = []

    def another_worker_takes_a_member_first(group):
        if not stolen and len(group.members) > 1:  # a fused group (a lone run is a group of one)
            directory = group.members[1].directory
            lease = Lease.acquire(directory, label="another worker", timeout=60, heartbeat=0.2)
            lease.start_heartbeat()
            stolen.append(directory)
            threading.Timer(1.0, lease.release).start()  # it gives up without training
        return real(group)

    monkeypatch.setattr(leased, "run_group_task", another_worker_takes_a_member_first)
    outcome = run_experiment(SMOKE, "smoke", root=tmp_path / "store", out_dir=tmp_path / "out", seeds=1,
                             progress=False, threads=1, fuse=3, poll=0.2)
    assert stolen and not outcome.failures and outcome.fused >= 2
    events = read_attempts(stolen[0])
    assert [e["event"] for e in events] == ["start", "finish"]  # trained once, by this runner
    assert "fused_group" not in events[0]  # alone, after its holder let go
    untimed = lambda rows: sorted((dataclasses.replace(r, ticket="") for r in rows), key=_key)
    assert untimed(outcome.rows) == untimed(read_results(smoke_run[1]))
