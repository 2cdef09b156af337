"""Several runners on one store: each run trained once, a dead worker's run taken over, the graph
of runs (a slow IMP run holds back only what needs it), and `--status` of a half-finished experiment."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from elth.cli import main
from elth.experiments import get_experiment, read_results, run_experiment
from elth.experiments.attempts import read_attempts
from elth.experiments.lease import Lease
from elth.experiments.runner import build_graph
from elth.experiments.spec import expand
from elth.experiments.status import survey
from elth.workflows.imp import run_imp

SMOKE = get_experiment("smoke")
ELTH = [sys.executable, "-c", "import sys; from elth.cli import main; sys.exit(main())"]


def _elth(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*ELTH, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            **kwargs)


def _rows(out: Path) -> dict:
    return {(r.target, r.method, r.source, r.level, r.seed): dataclasses.replace(r, ticket="")
            for r in read_results(out)}


def _attempts(store: Path) -> dict[str, list[dict]]:
    return {run.name: read_attempts(run) for run in [*store.glob("imp-*"), *store.glob("ticket-*")]}


def test_two_processes_on_one_store_train_every_run_once(tmp_path):
    store = tmp_path / "store"
    procs = [_elth("experiment", "smoke", "--scale", "smoke", "--threads", "1", "--root", str(store),
                   "--out", str(tmp_path / f"out{i}"), "--no-report") for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    total = expand(SMOKE.setups("smoke")[0]).total
    attempts = _attempts(store)
    assert len(attempts) == total == 38
    for name, events in attempts.items():  # every run started once and finished once, by one process
        assert [e["event"] for e in events] == ["start", "finish"], (name, events)
        assert events[0]["pid"] == events[1]["pid"]
    workers = {events[0]["pid"] for events in attempts.values()}
    assert workers == {p.pid for p in procs}  # both did part of the work
    # Training logs have no line twice (two trainers of one run would append twice).
    for metrics in store.rglob("metrics.jsonl"):
        steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
        assert len(steps) == len(set(steps)), metrics
    # Both end with the full results, the same.
    first, second = _rows(tmp_path / "out0"), _rows(tmp_path / "out1")
    assert len(first) == 56 and first == second
    assert any("by another worker" in log or "running elsewhere" in log for log in logs)
    assert all("\r" not in log for log in logs)  # a log file gets lines, not progress bars


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_workers_run_is_finished_by_the_other(tmp_path):
    store = tmp_path / "store"
    common = ["experiment", "smoke", "--scale", "smoke", "--seeds", "1", "--threads", "1", "--root", str(store),
              "--no-report", "--lease-timeout", "3"]
    victim = _elth(*common, "--out", str(tmp_path / "victim"))
    survivor = _elth(*common, "--out", str(tmp_path / "survivor"))

    def victim_mid_run():
        for name, events in _attempts(store).items():
            if [e["event"] for e in events] == ["start"] and events[0]["pid"] == victim.pid:
                return name
        return None

    killed_run = _wait_for(victim_mid_run, 300, "the first process to start a run")
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    log = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, log
    events = read_attempts(store / killed_run)
    assert [e["event"] for e in events] == ["start", "start", "finish"], events
    assert events[0]["pid"] == victim.pid and events[1]["pid"] == events[2]["pid"] == survivor.pid
    assert events[1]["took_over_from"].startswith(f"{os.uname().nodename} (pid {victim.pid}")
    # The victim ran on this host, so its lease was free once its process was gone; the survivor took
    # the run over at its next look at the store, without waiting for the lease's timeout (3 s).
    assert events[1]["time"] >= killed_at
    rows = _rows(tmp_path / "survivor")
    assert len(rows) == 3 * 4 + 16  # IMP levels 0-3 of the three MLPs and every other ticket
    for name, attempts in _attempts(store).items():
        assert [e["event"] for e in attempts][-1] == "finish", name


@pytest.fixture(scope="module")
def dag_setup():
    # IMP on MLP-1/2/3 to level 2, MLP-2's tickets to MLP-1 and MLP-3, random baselines, one seed.
    part = dataclasses.replace(SMOKE.setups("smoke")[0], levels=(1, 2), baselines=("random",), seeds=1)
    return part


def test_a_slow_imp_run_holds_back_only_the_runs_that_need_it(dag_setup, tmp_path):
    """MLP-3's IMP run is held by a slow worker elsewhere, which has trained level 0 and made the
    level-1 ticket; the runner must run every ticket it can meanwhile, those into MLP-3 at level 1
    included, and leave only what needs MLP-3's deeper levels."""
    store, out = tmp_path / "store", tmp_path / "out"
    _, _, graph = build_graph(SMOKE, "smoke", root=store, setups=(dag_setup,))
    slow = next(n for n in graph.imp.values() if n.run.model == "mlp_3")
    from elth.experiments.jobs import dataset, imp_config

    run_imp(imp_config(slow.ctx, "mlp_3", 0), dataset(slow.ctx), 1, store, progress=False)  # level 1 exists
    assert (Path(slow.directory) / "level_1" / "ticket.safetensors").is_file()
    lease = Lease.acquire(slow.directory, label="slow worker", timeout=60, heartbeat=0.2)
    lease.start_heartbeat()
    runner = threading.Thread(target=run_experiment, args=(SMOKE, "smoke"), daemon=True,
                              kwargs=dict(root=store, out_dir=out, setups=(dag_setup,), progress=False, poll=0.2))
    try:
        runner.start()
        plan = expand(dag_setup)
        independent = [t for t in plan.tickets if t.target != "mlp_3" and t.source != "mlp_3"]
        into_mlp3_level1 = [t for t in plan.tickets if t.target == "mlp_3" and t.level == 1]
        needs_deeper = [t for t in plan.tickets if t.target == "mlp_3" and t.level == 2]
        assert independent and into_mlp3_level1 and needs_deeper

        def statuses():
            return {s.label: s for s in survey(build_graph(SMOKE, "smoke", root=store, setups=(dag_setup,))[2])}

        def ready_ones_done():
            now = statuses()
            return now if all(now[t.label].state == "done" for t in independent + into_mlp3_level1) else None

        now = _wait_for(ready_ones_done, 300, "the runs that do not need MLP-3's deeper levels")
        assert runner.is_alive()  # still waiting for MLP-3
        imp3 = now[slow.label]
        assert imp3.state == "running" and f"pid {os.getpid()}" in imp3.detail and "2 of 4 levels trained" in imp3.detail
        for t in needs_deeper:
            assert now[t.label].state == "waiting" and "IMP level 2 of mlp_3" in now[t.label].detail
    finally:
        lease.release()  # the slow worker gives up: the runner takes MLP-3 over and finishes
    runner.join(300)
    assert not runner.is_alive()
    rows = _rows(out)
    assert {(k[0], k[1], k[3]) for k in rows} >= {(t.target, t.method, t.level) for t in plan.tickets}
    final = statuses()
    assert {s.state for s in final.values()} == {"done"}


def test_status_of_a_failed_run_shows_its_last_error_line(tmp_path, capsys):
    from elth.experiments.spec import Setup, Transfer

    smoke = SMOKE.setups("smoke")[0]
    bad = Setup(dataset=smoke.dataset, members=("mlp_1", "mlp_2"), levels=(1,), preset="smoke",
                transfers=(Transfer("mlp_1", "mlp_2"),), seeds=1)
    with pytest.raises(Exception):
        run_experiment(SMOKE, "smoke", root=tmp_path, out_dir=tmp_path / "out", setups=(bad,), progress=False)
    statuses = {s.label: s for s in survey(build_graph(SMOKE, "smoke", root=tmp_path, setups=(bad,))[2])}
    failed = statuses["ett mlp_2 <- mlp_1 level 1 seed 0"]
    assert failed.state == "failed" and "mlp_1 has no unit to replicate" in failed.detail
    assert {s.state for label, s in statuses.items() if label != failed.label} == {"done"}


def test_status_and_report_only_from_the_command_line(tmp_path, capsys):
    store = tmp_path / "store"
    part = ["--seeds", "1", "--root", str(store)]
    assert main(["experiment", "smoke", "--scale", "smoke", "--status", *part]) == 0
    text = capsys.readouterr().out
    assert "19 runs: 3 ready, 16 waiting" in text and "for IMP level 1 of mlp_2 and IMP level 1 of mlp_1" in text
    # Half of it: MLP-2's IMP run alone, as a worker that stopped after it would leave it.
    _, _, graph = build_graph(SMOKE, "smoke", root=store, seeds=1)
    from elth.experiments.jobs import run_imp_job

    mlp2 = next(n for n in graph.imp.values() if n.run.model == "mlp_2")
    run_imp_job(mlp2.ctx, mlp2.run)
    assert main(["experiment", "smoke", "--scale", "smoke", "--status", *part]) == 0
    text = capsys.readouterr().out
    assert "19 runs: 1 done, 6 ready, 12 waiting" in text  # MLP-2's baselines need nothing else
    assert "pace so far" not in text  # run outside a runner: no attempt records, no pace
    # As a runner records it: 40 s for MLP-2's IMP run (its dense network and 3 levels: 4 trainings).
    (Path(mlp2.directory) / "attempts.jsonl").write_text(
        json.dumps({"event": "start", "time": 1000.0}) + "\n" + json.dumps({"event": "finish", "time": 1040.0,
                                                                         "seconds": 40.0}) + "\n")
    assert main(["experiment", "smoke", "--scale", "smoke", "--status", *part]) == 0
    # left: the two other IMP runs (8 trainings) and 16 ticket runs, at 10 s a training
    assert ("pace so far: 4 trainings of finished runs in 40 s of training time (10 s each); the 24 trainings "
            "left, about 4 min at that pace") in capsys.readouterr().out
    assert main(["experiment", "smoke", "--scale", "smoke", "--report-only", "--out", str(tmp_path / "out"),
                 *part]) == 0
    rows = read_results(tmp_path / "out")
    assert {(r.target, r.method) for r in rows} == {("mlp_2", "dense"), ("mlp_2", "imp")}
    assert (tmp_path / "out" / "report.md").is_file()


def test_status_of_a_new_store_creates_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["experiment", "smoke", "--scale", "smoke", "--root", str(store), "--status"]) == 0
    assert "38 runs: 6 ready, 32 waiting" in capsys.readouterr().out
    assert not store.exists()


def test_busy_seconds_counts_each_moment_once_and_pauses_not(tmp_path):
    from elth.experiments.attempts import busy_seconds

    def attempts(name: str, *events: dict) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "attempts.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + "not json\n")
        return d

    a = attempts("a", {"event": "start", "time": 100.0}, {"event": "finish", "time": 110.0, "seconds": 10.0})
    # overlaps a's span by 4 s; then a failed attempt and, after a pause, a second one that finished
    b = attempts("b", {"event": "start", "time": 106.0}, {"event": "fail", "time": 112.0, "seconds": 6.0},
                 {"event": "start", "time": 200.0}, {"event": "finish", "time": 203.0, "seconds": 3.0})
    c = attempts("c", {"event": "start", "time": 101.0}, {"event": "lost", "time": 103.0, "seconds": 2.0},
                 {"event": "start", "time": 300.0})  # inside a's span; then an attempt still running: no span
    assert busy_seconds([a]) == 10.0
    assert busy_seconds([a, b, c]) == (112.0 - 100.0) + 3.0
    assert busy_seconds([c, tmp_path / "missing"]) == 2.0
