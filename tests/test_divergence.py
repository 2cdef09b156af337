"""A training whose loss stops being finite ends with a clear error and a failed record, never a result."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from elth.experiments import read_results, run_experiment
from elth.experiments.report import write_report
from elth.experiments.runner import ExperimentFailed
from elth.experiments.spec import Experiment, Setup
from elth.masks import PruningError, full_mask, magnitude_prune
from elth.training import Protocol, TrainingDiverged
from elth.training.protocol import LRSchedule
from elth.training.step import DivergenceCheck


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity (which are not JSON)."""
    def refuse(name):
        raise ValueError(f"{name} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_train_with_a_huge_learning_rate_stops_at_the_first_nan_and_records_the_failure(tmp_path):
    elth = Path(sys.executable).with_name("elth")
    argv = [str(elth)] if elth.is_file() else [sys.executable, "-m", "elth.cli"]
    p = subprocess.run([*argv, "train", "--model", "mlp_2", "--dataset", "digits", "--lr", "1e6", "--no-progress",
                        "--out", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith("elth train: error: training diverged: the training loss is nan at step ")
    assert "(learning rate 1e+06)" in line and "learning rate is likely too high" in line
    record = strict_json((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "failed" and record["reason"] == "diverged"
    assert 1 <= record["step"] <= 12 and record["error"] in line  # within the first epoch (12 steps)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # no checkpoint of NaN weights


def test_the_accelerator_path_names_the_first_bad_step_when_it_reads_the_flag():
    schedule = LRSchedule(Protocol(length="100it", lr=0.5, milestones=()), 10)
    check = DivergenceCheck(torch.device("cpu"), schedule, eager=False)
    for step, loss in enumerate([1.0, 2.0, float("inf"), float("nan"), 3.0]):
        check.after_step(step, torch.tensor(loss))  # nothing read back yet
    with pytest.raises(TrainingDiverged, match="not finite at step 3 .learning rate 0.5."):
        check.check_loss()


def test_weights_that_are_not_finite_are_caught_before_a_checkpoint():
    schedule = LRSchedule(Protocol(length="100it", milestones=()), 10)
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="the weights of weight are not finite at step 8"):
        DivergenceCheck(torch.device("cpu"), schedule).check_weights(model, 7)


def test_imp_never_prunes_by_nan_magnitudes():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    mask = full_mask(model)
    weights = {"0.weight": torch.randn(3, 4)}
    weights["0.weight"][1, 2] = float("nan")
    with pytest.raises(PruningError, match="not all finite"):
        magnitude_prune(weights, mask, 0.2, ["0.weight"])


def test_an_experiment_with_one_diverging_run_reports_it_failed_and_finishes_the_others(tmp_path):
    fine = Setup(dataset="digits", members=("mlp_1", "mlp_3"), levels=(1,), preset="smoke", sources=("mlp_3",),
                 baselines=("random",), seeds=1)
    diverging = Setup(dataset="digits", members=("mlp_2",), levels=(1,), preset="smoke", protocol=(("lr", 1e6),),
                      seeds=1)
    experiment = Experiment("divergence", "One part diverges", "none", "A test.",
                            scales=(("smoke", (fine, diverging)),))
    store, out = tmp_path / "store", tmp_path / "out"
    with pytest.raises(ExperimentFailed, match=r"^1 of 6 runs failed \(imp mlp_2 seed 0"):
        run_experiment(experiment, "smoke", root=store, out_dir=out, progress=False)

    rows = read_results(out)
    assert {(r.target, r.method) for r in rows} == {
        ("mlp_1", "dense"), ("mlp_1", "imp"), ("mlp_3", "dense"), ("mlp_3", "imp"), ("mlp_1", "ett"),
        ("mlp_1", "random"), ("mlp_3", "random")}
    meta = strict_json((out / "experiment.json").read_text())
    (failure,) = meta["failures"]
    assert failure["run"].startswith("imp mlp_2 seed 0")
    assert failure["error"].startswith("training diverged: the training loss is nan at step ")
    assert meta["runs"]["failed"] == 1
    report = write_report(out).read_text()
    assert "## Failed runs" in report and failure["run"] in report and "training diverged" in report

    records = {p: strict_json(p.read_text()) for p in store.rglob("*.json")}  # every JSON file is strict JSON
    (failed,) = [p for p, r in records.items() if isinstance(r, dict) and r.get("status") == "failed"]
    assert failed.relative_to(store).parts[1:] == ("level_0", "train", "result.json")
    assert records[failed]["reason"] == "diverged" and records[failed]["step"] >= 1
    imp_run = store / failed.relative_to(store).parts[0]
    assert not (imp_run / "level_1").exists()  # nothing pruned after the diverged level


def test_a_kept_diverged_ticket_run_is_recorded_as_diverged_and_read_back(tmp_path):
    import dataclasses

    from elth.experiments.jobs import Context, Diverged, run_imp_job, run_ticket_job, ticket_cached
    from elth.experiments.spec import ImpRun, TicketRun

    fine = Context(root=str(tmp_path), dataset="digits", preset="smoke", progress=False)
    level = run_imp_job(fine, ImpRun("mlp_2", 0, 1)).levels[1]  # a real IMP ticket, trained at the smoke LR
    keep = dataclasses.replace(fine, protocol=(("lr", 1e6),), keep_diverged=True)
    run = TicketRun("random", "mlp_2", 1, 0)

    kept = run_ticket_job(keep, run, level, level)
    assert isinstance(kept, Diverged) and kept.step >= 1 and kept.error.startswith("training diverged")
    (record_file,) = tmp_path.glob("ticket-*/result.json")
    record = strict_json(record_file.read_text())
    assert record["status"] == "diverged" and record["step"] == kept.step
    assert ticket_cached(keep, run, level, level) == kept  # read back, not trained again
    strict = dataclasses.replace(keep, keep_diverged=False)
    assert ticket_cached(strict, run, level, level) is None  # without the flag it is tried again ...
    with pytest.raises(TrainingDiverged):
        run_ticket_job(strict, run, level, level)  # ... and fails


    # The runner's scheduler counts it as diverged, not failed, and the report lists it.
    from elth.experiments.dag import DIVERGED, Graph, Scheduler
    from elth.experiments.leased import WorkerSettings
    from elth.experiments.local_launchers import InlineLauncher
    from elth.experiments.report import _diverged_section
    from elth.experiments.runner import _ExperimentLines

    graph = Graph([(fine, ImpRun("mlp_2", 0, 1))], [(keep, run)], [])
    tally = Scheduler(graph, InlineLauncher(), WorkerSettings(), _ExperimentLines(2, False, False)).run()
    assert graph.tickets[0].state == DIVERGED
    assert tally.failures == [] and tally.diverged == [(run.label, kept.error)]
    section = _diverged_section({"diverged": [{"run": run.label, "error": kept.error}]})
    assert section.startswith("## Diverged runs") and run.label in section
