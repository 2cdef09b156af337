"""Launchers: the same runs, the same results, whether run here, as submitit jobs or on a real SLURM."""
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from elth.experiments import get_experiment, read_results, run_experiment
from elth.experiments.attempts import read_attempts
from elth.experiments.launch import LaunchOptions
from elth.experiments.leased import GroupTask, LaunchError, Task, WorkerSettings
from elth.experiments.local_launchers import PoolLauncher, worker_devices
from elth.experiments.slurm_launcher import SlurmOptions, parse_slurm_args, parse_time
from elth.experiments.lease import holder
from elth.experiments.spec import expand
from elth.errors import Terminated

SMOKE = get_experiment("smoke")
#: Part of the smoke experiment: IMP on two MLPs and the ETT between them (one job starts a Python
#: with torch: each costs seconds).
PART = dataclasses.replace(SMOKE.setups("smoke")[0], members=("mlp_2", "mlp_3"), levels=(1,), baselines=(),
                           seeds=1)
REPO = Path(__file__).resolve().parents[1]
START_CLUSTER = REPO / ".ci" / "slurm" / "start-local-cluster.sh"
STOP_CLUSTER = REPO / ".ci" / "slurm" / "stop-local-cluster.sh"


def _results(out):
    return {(r.target, r.method, r.source, r.level, r.seed): dataclasses.replace(r, ticket="")
            for r in read_results(out)}


def _run(tmp_path, name, launch):
    out = tmp_path / name / "out"
    outcome = run_experiment(SMOKE, "smoke", root=tmp_path / name / "store", out_dir=out, setups=(PART,),
                             launch=launch, progress=False, poll=0.2)
    return outcome, out


@pytest.fixture(scope="module")
def local_results(tmp_path_factory):
    """The reference: every run of PART in this process."""
    tmp = tmp_path_factory.mktemp("local")
    outcome, out = _run(tmp, "local", LaunchOptions(threads=1))
    assert outcome.trained == expand(PART).total == 3
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["runs"] == {"trained": 3, "cached": 0, "by_others": 0, "failed": 0, "diverged": 0, "fused": 0}
    return _results(out)


def _trained_once(store: Path) -> None:
    for run in [*store.glob("imp-*"), *store.glob("ticket-*")]:
        events = [e["event"] for e in read_attempts(run)]
        assert events == ["start", "finish"], f"{run.name}: {events}"
        assert not (run / "submitted.json").exists()  # a started job clears its run's "queued" mark


def test_submitit_jobs_give_the_local_results(local_results, tmp_path):
    """submitit's local executor: each run a job (a subprocess unpickling the task), as on SLURM."""
    outcome, out = _run(tmp_path, "submitit", LaunchOptions(launcher="submitit-local", max_parallel=2))
    assert outcome.trained == 3 and not outcome.failures
    assert _results(out) == local_results
    _trained_once(tmp_path / "submitit" / "store")
    assert len(list((out / "jobs").glob("*/*_result.pkl"))) == 3
    assert not (out / "jobs" / "%j").exists()  # no folder left with submitit's placeholder as its name
    assert not (out / "jobs" / "%j").exists()  # no folder left with submitit's placeholder as its name


def test_fused_groups_run_as_one_submitit_job_each(tmp_path):
    """With two seeds, the IMP runs of each network and the two ETT runs are fused groups: one job
    each, holding its members' leases; every run still records one attempt, and the rows are
    those of training every run alone (MLPs train bit for bit alike fused)."""
    part = dataclasses.replace(PART, seeds=2)
    alone = run_experiment(SMOKE, "smoke", root=tmp_path / "alone" / "store", out_dir=tmp_path / "alone" / "out",
                           setups=(part,), launch=LaunchOptions(threads=1), progress=False, fuse=1)
    assert alone.fused == 0 and alone.trained == expand(part).total == 6
    out = tmp_path / "fused" / "out"
    outcome = run_experiment(SMOKE, "smoke", root=tmp_path / "fused" / "store", out_dir=out, setups=(part,),
                             launch=LaunchOptions(launcher="submitit-local", max_parallel=2), progress=False,
                             poll=0.2, fuse=2)
    assert outcome.trained == 6 and outcome.fused == 6 and not outcome.failures
    assert _results(out) == _results(tmp_path / "alone" / "out")
    _trained_once(tmp_path / "fused" / "store")
    assert len(list((out / "jobs").glob("*/*_result.pkl"))) == 3


def _cluster_up() -> str | None:
    """Start the one-node SLURM cluster (idempotent); None when it is up, else why it is not."""
    if shutil.which("bash") is None:
        return "no bash"
    try:
        done = subprocess.run(["bash", str(START_CLUSTER)], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "start-local-cluster.sh took over 10 minutes"
    if done.returncode != 0:
        return (done.stderr.strip() or done.stdout.strip()).splitlines()[-1]
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    was_up = shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h"], capture_output=True).returncode == 0
    why = _cluster_up()
    if why is not None:
        print(f"\nSLURM test skipped: the local cluster cannot start: {why}")
        pytest.skip(f"no local SLURM cluster: {why}")
    yield
    if not was_up:  # leave the machine as it was
        subprocess.run(["bash", str(STOP_CLUSTER)], capture_output=True)


def test_slurm_jobs_give_the_local_results(slurm_cluster, local_results, tmp_path):
    """The real thing: sbatch, slurmctld, slurmd, a job per run, results identical to the local ones."""
    outcome, out = _run(tmp_path, "slurm", LaunchOptions(launcher="slurm", max_parallel=4,
                                                         slurm=SlurmOptions(time_min=10)))
    assert outcome.trained == 3 and not outcome.failures
    assert _results(out) == local_results
    store = tmp_path / "slurm" / "store"
    _trained_once(store)
    jobs = {e.get("slurm_job") for run in store.glob("*-*") for e in read_attempts(run)}
    assert len(jobs - {None, ""}) == 3  # each run in a job of its own


def test_slurm_options_and_their_parsing():
    assert parse_time("90") == 90 and parse_time("02:30:00") == 150 and parse_time("1-00:00:00") == 1440
    assert parse_time("00:00:30") == 1
    with pytest.raises(LaunchError):
        parse_time("soon")
    assert parse_slurm_args(["qos=high", "--mem-per-cpu=4G"]) == (("qos", "high"), ("mem_per_cpu", "4G"))
    with pytest.raises(LaunchError):
        parse_slurm_args(["qos"])
    params = SlurmOptions(partition="gpu", gpus_per_run=2, cpus_per_run=8, time_min=60,
                          extra=(("qos", "high"),)).submitit_parameters()
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 2 and params["cpus_per_task"] == 8
    assert params["timeout_min"] == 60 and params["slurm_additional_parameters"] == {"qos": "high"}
    with pytest.raises(LaunchError):
        LaunchOptions(launcher="slurm", devices=("cuda:0",)).check()
    LaunchOptions(launcher="slurm", slurm=SlurmOptions(gpus_per_run=1)).check()
    with pytest.raises(LaunchError, match="0 or 1"):  # a second GPU would sit idle: no ranks in a job
        LaunchOptions(launcher="slurm", slurm=SlurmOptions(gpus_per_run=2)).check()
    assert LaunchOptions(workers=4, threads=None).worker_threads() == max(1, (os.cpu_count() or 1) // 4)
    assert LaunchOptions(launcher="slurm", slurm=SlurmOptions(cpus_per_run=6)).worker_threads() == 6


@dataclasses.dataclass(frozen=True)
class _FakeContext:
    device: str | None


def _device_of(ctx, rendezvous):
    """The device a worker gave the run, once both workers are busy (so that each gets work)."""
    Path(rendezvous, str(os.getpid())).touch()
    deadline = time.time() + 60
    while len(os.listdir(rendezvous)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    return ctx.device, os.getpid()


def _never_cached(ctx, rendezvous):
    return None


def test_local_workers_are_spread_over_the_devices(tmp_path):
    assert worker_devices(5, ["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    launcher = PoolLauncher(2, threads=1, devices=["cuda:0", "cuda:1"])
    contexts = [_FakeContext("cuda")] * 4 + [_FakeContext("cpu")]  # the last asked for the CPU
    rendezvous = tmp_path / "workers"
    rendezvous.mkdir()
    try:
        for i, ctx in enumerate(contexts):
            launcher.submit(Task(key=i, label=f"task {i}", directory=str(tmp_path / f"run{i}"), fn=_device_of,
                                 ctx=ctx, args=(str(rendezvous),), cached=_never_cached,
                                 settings=WorkerSettings()))
        done = []
        deadline = time.time() + 120
        while len(done) < len(contexts) and time.time() < deadline:
            done += launcher.wait(1.0)
    finally:
        launcher.close()
    assert all(err is None for _, _, err in done)
    results = {task.key: outcome.result for task, outcome, _ in done}
    assert results[4][0] == "cpu"  # a run on the CPU keeps its device in a pool of GPU workers
    gpu_runs = [results[i] for i in range(4)]
    by_pid: dict[int, set] = {}
    for device, pid in gpu_runs:
        by_pid.setdefault(pid, set()).add(device)
    assert {device for device, _ in gpu_runs} == {"cuda:0", "cuda:1"}  # both GPUs used
    assert all(len(d) == 1 for d in by_pid.values())  # each worker keeps its own GPU


def test_devices_on_the_command_line(capsys, tmp_path):
    from elth.cli import main
    from elth.commands.experiment import parse_devices

    assert parse_devices("0,2") == ("cuda:0", "cuda:2") and parse_devices("cuda:1") == ("cuda:1",)
    assert main(["experiment", "smoke", "--scale", "smoke", "--devices", "0,x"]) == 2
    assert "expected GPU numbers" in capsys.readouterr().err
    assert main(["experiment", "smoke", "--scale", "smoke", "--devices", "0", "--device", "cpu"]) == 2
    assert "does not combine with --device cpu" in capsys.readouterr().err
    assert main(["experiment", "smoke", "--scale", "smoke", "--launcher", "slurm", "--time", "later"]) == 2
    assert "--time 'later'" in capsys.readouterr().err
    # a GPU that is not there: refused before any worker starts on it
    assert main(["experiment", "smoke", "--scale", "smoke", "--devices", "0,999", "--root",
                 str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    if torch.cuda.device_count() == 0:
        assert "--devices 0,999: no GPU is visible here" in err
    else:
        assert f"--devices: cuda:999 does not exist: {torch.cuda.device_count()} GPU(s) visible" in err
    assert not (tmp_path / "never").exists()


def test_a_slurm_job_is_requeued_at_its_time_limit_or_on_preemption(tmp_path):
    """submitit requeues a checkpointable job (same task: the run resumes from its checkpoints); the
    job's exit on requeue is recorded as a stop, not a failure, and frees the lease at once."""
    from elth.experiments.leased import run_task
    from elth.experiments.slurm_launcher import _RunTaskJob

    task = Task(key=0, label="a run", directory=str(tmp_path / "run"), fn=_exit_as_requeued,
                ctx=_FakeContext("cpu"), args=(None,), cached=_never_cached)
    delayed = _RunTaskJob().checkpoint(task)
    assert isinstance(delayed.function, _RunTaskJob) and delayed.args == (task,)
    with pytest.raises(SystemExit):
        run_task(task)
    assert [e["event"] for e in read_attempts(tmp_path / "run")] == ["start", "stop"]
    assert not (tmp_path / "run" / "failure.json").exists()
    from elth.experiments.lease import holder

    assert holder(tmp_path / "run") is None


def _exit_as_requeued(ctx, _):
    raise SystemExit(0)


def _sleep_group(ctx, args) -> int:
    """A fused group's training that takes `ctx` seconds (spawned workers import it from this module)."""
    time.sleep(ctx)
    return len(args)


@pytest.mark.parametrize("grouped", [False, True])
def test_a_stopped_experiment_stops_its_workers_runs_and_releases_their_leases(grouped, tmp_path):
    """SIGTERM to the experiment process alone (`kill`; Ctrl-C reaches the workers by itself): its
    workers stop their runs at once instead of finishing them, record them as interrupted and
    release their leases, so that running the command again resumes them at once."""
    # Runs that would take two minutes: time.sleep(120) under the run's lease (logging.debug: nothing cached).
    tasks = [Task(key=f"sleeper{i}", label=f"sleeper {i}", directory=str(tmp_path / f"run{i}"), fn=time.sleep,
                  ctx=120, args=(), cached=logging.debug, settings=WorkerSettings(threads=1)) for i in range(2)]
    launcher = PoolLauncher(workers=1, threads=1)
    if grouped:
        launcher.submit(GroupTask(key="group", label="two sleepers", members=tuple(tasks), train=_sleep_group,
                                  settings=WorkerSettings(threads=1)))
    else:
        launcher.submit(tasks[0])
    started = tasks if grouped else tasks[:1]
    deadline = time.time() + 120
    while any(holder(t.directory) is None for t in started):  # the worker has taken the runs' leases
        assert time.time() < deadline, "the worker never started the runs"
        time.sleep(0.2)
    time.sleep(0.5)  # its attempts are recorded
    start = time.time()
    launcher.__exit__(Terminated, Terminated(), None)  # what `with launcher:` does as SIGTERM unwinds the command
    assert time.time() - start < 60
    for t in started:
        assert holder(t.directory) is None
        events = [(e["event"], e.get("error")) for e in read_attempts(t.directory)]
        assert events == [("start", None), ("fail", "interrupted")]


SLURM_SMOKE = ["experiment", "smoke", "--scale", "smoke", "--launcher", "slurm", "--seeds", "1", "--no-progress",
               "--no-report", "--time", "10"]


@pytest.mark.parametrize("options, says", [
    (["--partition", "nosuch"], "invalid partition specified: nosuch"),
    (["--slurm-arg", "foo=bar"], "unrecognized option '--foo=bar'"),
    (["--slurm-arg", "mem=999999G"], "Requested node configuration is not available"),
    (["--cpus-per-run", "64"], "Requested node configuration is not available"),  # a 2-CPU node: never
])
def test_slurm_refusing_the_jobs_is_one_line_before_anything_is_submitted(slurm_cluster, tmp_path, options, says):
    argv = [sys.executable, "-m", "elth", *SLURM_SMOKE, "--root", "store", "--out", "out", *options]
    started = time.monotonic()
    p = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("elth experiment: error: --launcher slurm: SLURM would refuse these jobs (")
    assert says in p.stderr and "Traceback" not in p.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())
    assert not list(tmp_path.glob("out/jobs/*")) and not list(tmp_path.glob("out/jobs/.*"))


def test_pending_slurm_jobs_say_why_and_cancelled_ones_show_failed(slurm_cluster, tmp_path):
    """Jobs held by SLURM (here: not to begin for an hour) are queued with SLURM's reason in
    `--status`; cancelled from outside, their runs are failed, with the reason, both in `--status`
    and in the run directory (what the next `--status` reads)."""
    with_progress = [a for a in SLURM_SMOKE if a != "--no-progress"]  # lines, not bars: stderr is a pipe
    argv = [sys.executable, "-m", "elth", *with_progress, "--root", "store", "--out", "out",
            "--slurm-arg", "begin=now+3600"]
    runner = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("store/*/submitted.json")):
            assert runner.poll() is None and time.monotonic() < deadline, runner.communicate()
            time.sleep(0.2)
        status = subprocess.run([sys.executable, "-m", "elth", *SLURM_SMOKE, "--root", "store", "--out", "out",
                                 "--status"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert status.returncode == 0, status.stderr
        assert "pending: BeginTime" in status.stdout
        jobs = {json.loads(p.read_text())["job"] for p in tmp_path.glob("store/*/submitted.json")}
        subprocess.run(["scancel", *jobs], check=True, timeout=60)
        status = subprocess.run([sys.executable, "-m", "elth", *SLURM_SMOKE, "--root", "store", "--out", "out",
                                 "--status"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert "is no longer in SLURM's queue and never started the run" in status.stdout, status.stdout
    finally:
        runner.terminate()
        out, err = runner.communicate(timeout=120)
    assert not list(tmp_path.glob("out/jobs/.submission_file_*"))
    # the runner's own progress lines (a log, not a terminal) said why the jobs waited
    assert "pending: BeginTime)" in err, err


ORPHAN_SCRIPT = """
import logging, sys, time
from elth.experiments.leased import Task, WorkerSettings
from elth.experiments.local_launchers import PoolLauncher
if __name__ == "__main__":
    launcher = PoolLauncher(workers=2, threads=1)
    for i in range(2):
        launcher.submit(Task(key=f"sleeper{i}", label=f"sleeper {i}", directory=f"{sys.argv[1]}/run{i}", fn=time.sleep,
                             ctx=300, args=(), cached=logging.debug, settings=WorkerSettings(threads=1)))
    time.sleep(600)
"""


def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
def test_workers_end_with_an_experiment_process_that_is_killed(tmp_path):
    """SIGKILL gives the experiment process no chance to stop its workers: they notice it gone, stop
    their runs as SIGTERM would (attempt recorded, lease released) and exit, with the resource
    tracker, instead of training on as orphans."""
    (tmp_path / "main.py").write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, "main.py", str(tmp_path)], cwd=tmp_path)
    runs = [tmp_path / f"run{i}" for i in range(2)]
    deadline = time.time() + 120
    while any(holder(r) is None for r in runs):
        assert parent.poll() is None and time.time() < deadline, "the workers never started the runs"
        time.sleep(0.2)
    time.sleep(0.5)
    children = _children(parent.pid)
    assert len(children) >= 2  # two workers (and multiprocessing's resource tracker)
    parent.kill()
    parent.wait()
    deadline = time.time() + 60
    while any(_alive(c) for c in children):
        assert time.time() < deadline, f"orphans still running: {[c for c in children if _alive(c)]}"
        time.sleep(0.2)
    for r in runs:
        assert holder(r) is None
        assert [(e["event"], e.get("error")) for e in read_attempts(r)] == [("start", None), ("fail", "interrupted")]


def test_no_slurm_controller_to_answer_is_one_line(slurm_cluster, tmp_path):
    """This machine's slurm.conf, but naming a port no controller listens on."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    lines = [line for line in conf.read_text().splitlines() if not line.startswith(("SlurmctldPort", "MessageTimeout"))]
    (tmp_path / "slurm.conf").write_text("\n".join([*lines, "SlurmctldPort=1", "MessageTimeout=1"]) + "\n")
    p = subprocess.run([sys.executable, "-m", "elth", *SLURM_SMOKE, "--root", "store", "--out", "out"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "SLURM_CONF": str(tmp_path / "slurm.conf")})
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "--launcher slurm: SLURM's controller does not answer (" in p.stderr
    assert "Unable to contact slurm controller" in p.stderr and not (tmp_path / "out" / "jobs").exists()
