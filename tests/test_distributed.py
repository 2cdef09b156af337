"""One training over several ranks: real torchrun processes (gloo on CPU) against one process.

Two ranks split the protocol's global batch, so they compute the same gradients as one process up
to the order of float32 additions (two partial sums and an all-reduce instead of one sum). Weights
therefore agree to a few units in the last place, not bitwise, until a ReLU input lies closer to
zero than that rounding: one order passes it and the other blocks it, that step's gradients differ
by far more than rounding, and SGD carries the gap on (chaos, not a bug: the same event parts two
1-rank runs whose kernels round differently). `WEIGHT_ATOL` bounds short runs, which stay below
such an event (observed: at most 1.5e-7 on mlp_2 after 46 IMP steps and after 92 steps, AVX2 and
AVX-512 alike; 1.3e-5 after 115 steps and up to 8e-4 after 184, which is why these runs stay short). Masks chosen
from those weights must be identical, and they are: no weight sits that close to a pruning
threshold here.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from elth.cli import main as elth
from elth.files import CHECKPOINT_FILE, TICKET_FILE, TRAIN_DIR
from elth.tickets import load_ticket
from elth.training import distributed

#: Largest weight difference accepted between a 2-rank and a 1-rank run (see the module docstring).
WEIGHT_ATOL = 1e-5
#: Seconds a torchrun test may take before it counts as hung (a collective waiting forever).
TIMEOUT = 240


def torchrun_command(args: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "elth", *args]


def rank_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    out = subprocess.run(torchrun_command(args, nproc), cwd=cwd, env=rank_env(), capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def one_process(args: list[str], cwd: Path, monkeypatch) -> None:
    monkeypatch.chdir(cwd)
    assert elth(args) == 0


def trained_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["model"]


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = WEIGHT_ATOL) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        if a[k].is_floating_point():
            worst = max(worst, (a[k] - b[k]).abs().max().item())
        else:
            assert torch.equal(a[k], b[k]), k
    assert worst <= atol, f"largest difference {worst:.3g} > {atol}"
    return worst


# -- helpers without processes --------------------------------------------------------------------
def test_one_process_is_rank_zero_of_one():
    assert not distributed.is_active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.local_slice(10) == slice(0, 10)
    assert distributed.loss_scale(7, 7) == 1.0


def test_strip_nproc_keeps_everything_else():
    argv = ["train", "--model", "mlp_2", "--nproc", "2", "--nproc=3", "--sync-bn"]
    assert distributed.strip_nproc(argv) == ["train", "--model", "mlp_2", "--sync-bn"]


# -- torchrun ---------------------------------------------------------------------------------------
IMP = ["imp", "--model", "mlp_2", "--dataset", "digits", "--levels", "2", "--length", "2ep",
       "--batch-size", "64", "--rewind", "10it", "--no-progress"]


def test_imp_on_two_ranks_matches_one_rank(tmp_path, monkeypatch):
    # digits has 1437 training examples: the last batch of every epoch (29) splits unevenly, 14 + 15.
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one_process(IMP + ["--root", "store"], tmp_path / "one", monkeypatch)
    torchrun(IMP + ["--root", "store"], tmp_path / "two")
    [run1] = (tmp_path / "one" / "store").glob("imp-*")
    [run2] = (tmp_path / "two" / "store").glob("imp-*")
    assert run1.name == run2.name  # the same settings: the rank count is not one of them
    for level in range(3):
        t1 = load_ticket(run1 / f"level_{level}" / TICKET_FILE)
        t2 = load_ticket(run2 / f"level_{level}" / TICKET_FILE)
        for k in t1.mask:
            assert torch.equal(t1.mask[k], t2.mask[k]), f"level {level}: masks differ at {k}"
        assert_close(t1.state, t2.state)
        assert_close(trained_weights(run1 / f"level_{level}" / TRAIN_DIR),
                     trained_weights(run2 / f"level_{level}" / TRAIN_DIR))
    assert t1.mask and sum(int((~m).sum()) for m in t1.mask.values()) > 0  # level 2 pruned something


#: cifar_resnet_8_8 after 8 steps: BN statistics over the global batch on 2 ranks differ from one
#: process by float32 rounding (observed 5e-5: BN nets on random labels amplify it step by step);
#: per-rank BN (16 examples per rank) differs by about 5e-2.
SYNC_BN_ATOL = 5e-4
RESNET = ["train", "--model", "cifar_resnet_8_8", "--dataset", "synthetic_3x16x16_c10_n256", "--length", "8it",
          "--batch-size", "32", "--lr", "0.02", "--eval-every", "none", "--no-progress", "--out", "run"]


def test_sync_bn_on_two_ranks_matches_one_rank(tmp_path, monkeypatch):
    for d in ("one", "sync", "per_rank"):
        (tmp_path / d).mkdir()
    one_process(RESNET, tmp_path / "one", monkeypatch)
    torchrun(RESNET + ["--sync-bn"], tmp_path / "sync")
    # Per-rank BN, started through `--nproc` (torchrun's launcher API) instead of torchrun itself.
    out = subprocess.run([sys.executable, "-m", "elth", *RESNET, "--nproc", "2"], cwd=tmp_path / "per_rank",
                         env=rank_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    reference = trained_weights(tmp_path / "one" / "run")
    assert_close(reference, trained_weights(tmp_path / "sync" / "run"), SYNC_BN_ATOL)  # running stats included
    # The comparison can tell: BN per rank normalises each half-batch by its own statistics.
    with pytest.raises(AssertionError):
        assert_close(reference, trained_weights(tmp_path / "per_rank" / "run"), 10 * SYNC_BN_ATOL)


RIGL = ["dst", "--method", "rigl", "--model", "mlp_2", "--dataset", "digits", "--sparsity", "0.9", "--length", "2ep",
        "--batch-size", "64", "--update-every", "5", "--no-progress", "--root", "store"]


def test_rigl_on_two_ranks_keeps_identical_masks(tmp_path, monkeypatch):
    # Every mask update (6 here: steps 5, 10, ..., 30) compares the ranks' masks and stops the run if
    # they differ (`check_identical`); the run below finishes, so they never did.
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    torchrun(RIGL, tmp_path / "two")
    one_process(RIGL, tmp_path / "one", monkeypatch)
    [t2] = (tmp_path / "two" / "store").glob(f"dst-*/{TICKET_FILE}")
    [t1] = (tmp_path / "one" / "store").glob(f"dst-*/{TICKET_FILE}")
    m1, m2 = load_ticket(t1).mask, load_ticket(t2).mask
    assert all(torch.equal(m1[k], m2[k]) for k in m1)  # and the same drops and grows as one process


def test_rigl_check_catches_ranks_growing_from_their_own_gradients(tmp_path):
    script = Path(__file__).parent / "rank_scripts" / "rigl_divergence.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    out = subprocess.run(cmd, cwd=tmp_path, env=rank_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    for r in (0, 1):
        assert f"rank {r} local gradients: diverged: RigL masks after the update at step 10 differ" in out.stdout
        assert f"rank {r} all-reduced gradients: identical" in out.stdout


PRUNE = ["prune", "--method", "grasp", "--model", "mlp_2", "--dataset", "digits", "--sparsity", "0.8", "--length", "1ep",
         "--batch-size", "64", "--rewind", "5it", "--score-examples", "60", "--no-progress", "--root", "store"]


def test_grasp_scored_over_two_ranks_gives_the_one_process_mask(tmp_path, monkeypatch):
    # 600 scoring examples are 3 batches of 256: rank 0 scores batches 0 and 2, rank 1 batch 1, and
    # both passes of GraSP (g, then H g) are all-reduced.
    torchrun(PRUNE + ["--output", "two.safetensors"], tmp_path)
    one_process(PRUNE + ["--output", "one.safetensors"], tmp_path, monkeypatch)  # the same rewind point (store)
    one, two = load_ticket(tmp_path / "one.safetensors"), load_ticket(tmp_path / "two.safetensors")
    assert one.provenance["score_examples"] == 600
    assert all(torch.equal(one.mask[k], two.mask[k]) for k in one.mask)


#: 4 epochs (92 steps): a 2-rank and a 1-rank run agree to ~1e-7 there on AVX2 and AVX-512 kernels alike; by
#: 5 epochs a ReLU that one sum order puts just above zero and the other just below has parted them
#: (1.3e-5 in one epoch, 1e-4 to 8e-4 by 7-8 epochs), and at which step that happens is chance.
TRAIN = ["train", "--model", "mlp_2", "--dataset", "digits", "--length", "4ep", "--batch-size", "64",
         "--no-progress", "--out", "run"]


def kill_after_first_checkpoint(cwd: Path) -> int:
    """Start TRAIN on 2 ranks, SIGKILL the launcher and both ranks once a checkpoint exists; its step."""
    proc = subprocess.Popen(torchrun_command(TRAIN), cwd=cwd, env=rank_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = cwd / "run" / CHECKPOINT_FILE
    deadline = time.monotonic() + TIMEOUT
    try:
        while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["step"]


def test_two_rank_run_killed_resumes_on_one_and_on_two_ranks(tmp_path, monkeypatch):
    (tmp_path / "killed").mkdir()
    step = kill_after_first_checkpoint(tmp_path / "killed")
    assert 0 < step < 4 * 23, step  # killed mid-run (23 steps per epoch)
    shutil.copytree(tmp_path / "killed", tmp_path / "on_two")
    shutil.copytree(tmp_path / "killed", tmp_path / "on_one")
    (tmp_path / "uninterrupted").mkdir()
    torchrun(TRAIN, tmp_path / "on_two")
    torchrun(TRAIN, tmp_path / "uninterrupted")
    one_process(TRAIN, tmp_path / "on_one", monkeypatch)
    final = trained_weights(tmp_path / "uninterrupted" / "run")
    # Resumed on the same 2 ranks: the same arithmetic, bit for bit.
    on_two = trained_weights(tmp_path / "on_two" / "run")
    assert all(torch.equal(final[k], on_two[k]) for k in final)
    # Resumed on 1 rank: the same global batches, sums in another order.
    assert_close(final, trained_weights(tmp_path / "on_one" / "run"))
    for d in ("on_two", "on_one"):
        steps = [row["step"] for row in map(eval_json, (tmp_path / d / "run" / "metrics.jsonl").read_text().splitlines())]
        assert steps == [23 * (e + 1) for e in range(4)], d  # every epoch logged once across the kill


def eval_json(line: str) -> dict:
    return json.loads(line)


def test_diverging_run_on_two_ranks_stops_on_both_with_a_failed_record(tmp_path):
    # Each rank sees only its share's loss; the ranks must still stop together (no rank left waiting
    # in a collective until the timeout) and rank 0 records the failure.
    args = ["train", "--model", "mlp_2", "--dataset", "digits", "--lr", "1e6", "--length", "2ep",
            "--batch-size", "64", "--no-progress", "--out", "run"]
    out = subprocess.run(torchrun_command(args), cwd=tmp_path, env=rank_env(), capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode != 0
    assert "training diverged" in out.stderr
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (record["status"], record["reason"]) == ("failed", "diverged")
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists()


EXPERIMENT = ["experiment", "smoke", "--scale", "smoke", "--seeds", "1", "--root", "store", "--out", "out",
              "--no-progress", "--no-report"]


def test_an_experiment_on_two_ranks_trains_every_run_on_both_as_one_process_would(tmp_path, monkeypatch):
    """Rank 0 schedules (store, leases, records) and hands each training, fused groups included, to
    both ranks; the other rank only trains. Every run starts and finishes once, and the rows are
    those of one process training every run alone."""
    from elth.experiments.attempts import read_attempts
    from elth.experiments.results import read_results

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    torchrun(EXPERIMENT + ["--fuse", "3"], tmp_path / "two")
    one_process(EXPERIMENT + ["--fuse", "1"], tmp_path / "one", monkeypatch)
    assert json.loads((tmp_path / "two" / "out" / "experiment.json").read_text())["runs"]["fused"] >= 6
    runs_of = lambda store: sorted([*store.glob("imp-*"), *store.glob("ticket-*")])
    runs = runs_of(tmp_path / "two" / "store")
    assert len(runs) == 19 and [r.name for r in runs] == [r.name for r in runs_of(tmp_path / "one" / "store")]
    for run in runs:
        events = read_attempts(run)
        assert [e["event"] for e in events] == ["start", "finish"], run.name
    key = lambda r: (r.target, r.method, r.source, r.level, r.seed)
    one = {key(r): r for r in read_results(tmp_path / "one" / "out")}
    two = {key(r): r for r in read_results(tmp_path / "two" / "out")}
    assert one.keys() == two.keys() and len(one) == 28
    for k in one:  # the same tickets (masks from weights within float32 rounding) and accuracies
        assert two[k].sparsity == one[k].sparsity and two[k].train_steps == one[k].train_steps, k
        assert abs(two[k].accuracy - one[k].accuracy) <= 1 / 128, k  # one test example of 128 at most


def fused_group_members(model_name: str = "mlp_1"):
    """Three tickets of `model_name` (different weights, masks and data seeds) and their protocol."""
    from elth.data import load_dataset
    from elth.models import build_model
    from elth.training import Member, Protocol

    data = load_dataset("digits")
    members = []
    for i in range(3):
        model = build_model(model_name, data.info.input_shape, data.info.num_classes, seed=i)
        g = torch.Generator().manual_seed(100 + i)
        mask = {n: torch.rand(model.get_parameter(n).shape, generator=g) < 0.6 for n in model.prunable_names()}
        members.append(Member(model, data_seed=10 + i, mask=mask))
    return data, Protocol(length="2ep", batch_size=64, lr=0.05, milestones=("1ep",)), members


@pytest.mark.parametrize("model_name", ["mlp_1", "vit_2"])  # the grouped and the stacked layout
def test_a_fused_group_on_two_ranks_trains_the_members_one_process_trains(tmp_path, model_name):
    """The fused network under DDP, each rank on its share of every member's batch (the last batch
    of an epoch splits unevenly): every member ends within float32 rounding of one process's."""
    from elth.training import train_group

    script = Path(__file__).parent / "rank_scripts" / "fused_group.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(Path(__file__).parent), model_name]
    out = subprocess.run(cmd, cwd=tmp_path, env=rank_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    data, protocol, members = fused_group_members(model_name)
    train_group(members, data, protocol, progress=False, device="cpu", members_at_once=3)
    for i, m in enumerate(members):
        two = torch.load(tmp_path / f"m{i}.pt", weights_only=True)
        assert_close(m.model.state_dict(), two)
        for n, keep in m.mask.items():
            assert bool((two[n][~keep] == 0).all()), (i, n)  # the masks held on both ranks
