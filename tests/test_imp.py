"""IMP with rewinding on a tiny MLP and synthetic data: the sparsity sequence, rewinding, caching,
extension, and exact resumption after a crash at any point."""
import json
import shutil

import pytest
import torch

import elth.workflows.imp as imp_module
import elth.workflows.rewind as rewind_module
from elth.data import load_dataset
from elth.errors import ElthError
from elth.masks import imp_kept_counts
from elth.tickets import TicketError, load_ticket
from elth.training import Protocol
from elth.training.checkpoint import load_checkpoint
from elth.workflows import train_ticket
from elth.workflows.imp import IMPConfig, read_summary, run_imp
from elth.workflows.rewind import RewindError, rewind_point

# 256 examples at batch 64: 4 steps per epoch, 12 steps in all; momentum so optimiser state matters.
PROTOCOL = Protocol(length="3ep", batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-4,
                    milestones=("2ep",), warmup="0")
DATASET = "synthetic_1x8x8_n256"
LEVELS = 3


def data():
    return load_dataset(DATASET)


def config(**changes) -> IMPConfig:
    base = dict(model="mlp_1", dataset=DATASET, protocol=PROTOCOL, rewind="5it", seed=1, data_seed=2)
    return IMPConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("imp_reference")
    results = run_imp(config(), data(), LEVELS, root, device="cpu", progress=False)
    return root, results


def run_of(root):
    (run,) = root.glob("imp-*")
    return run


def snapshot(root) -> dict:
    """Everything a run produced that must not depend on interruptions: tickets, final weights, metrics."""
    run = run_of(root)
    out = {}
    for level in range(LEVELS + 1):
        ticket = load_ticket(run / f"level_{level}" / "ticket.safetensors")
        final = load_checkpoint(run / f"level_{level}" / "train" / "checkpoint.pt")
        result = json.loads((run / f"level_{level}" / "result.json").read_text())
        out[level] = {
            "ticket": ticket.checksum(),
            "final_weights": {k: v.clone() for k, v in final["model"].items()},
            "metrics": {k: result[k] for k in ("test_accuracy", "test_loss", "train_loss", "end_step")},
        }
    return out


def assert_same_runs(a, b):
    sa, sb = snapshot(a), snapshot(b)
    for level in sa:
        assert sa[level]["ticket"] == sb[level]["ticket"], f"level {level}: tickets differ"
        assert sa[level]["metrics"] == sb[level]["metrics"], f"level {level}: metrics differ"
        for k, v in sa[level]["final_weights"].items():
            assert torch.equal(v, sb[level]["final_weights"][k]), f"level {level}: trained {k} differs"


def test_sparsity_follows_the_imp_sequence(reference):
    root, results = reference
    assert [r.level for r in results] == list(range(LEVELS + 1))
    total = results[0].prunable
    assert [r.kept for r in results] == imp_kept_counts(total, 0.2, LEVELS)
    for r in results:
        assert abs(r.sparsity - (1 - 0.8**r.level)) <= r.level / total
        ticket = load_ticket(r.ticket_path)
        assert ticket.sparsity == pytest.approx(r.sparsity)
        assert bool(ticket.mask["fc.weight"].all())  # the MLP's output layer stays dense
        assert r.rewind_step == 5 and r.end_step == 12 and r.train_steps == 7
        assert 0.0 <= r.test_accuracy <= 1.0


def test_tickets_are_rewind_weights_under_shrinking_masks(reference):
    root, results = reference
    tickets = [load_ticket(r.ticket_path) for r in results]
    rewind = tickets[0].state
    assert all(bool(m.all()) for m in tickets[0].mask.values())
    for prev, ticket in zip(tickets, tickets[1:]):
        for k, m in ticket.mask.items():
            assert not bool((m & ~prev.mask[k]).any()), "a pruned weight came back"
            w = rewind[k] * m
            assert torch.equal(ticket.state[k], w), "surviving weights must be the rewind weights"
            assert torch.equal(ticket.dense[k], rewind[k]), "every level keeps the dense rewind weights"
        for k in ticket.state:
            if k not in ticket.mask:
                assert torch.equal(ticket.state[k], rewind[k])
    for level, ticket in enumerate(tickets):
        p = ticket.provenance
        assert p["method"] == "imp" and p["level"] == level and p["run"] == run_of(root).name
        assert p["description"] == f"IMP level {level} of run {run_of(root).name}"
        assert ticket.rewind == "5it" and ticket.rewind_step == 5
        assert Protocol.from_dict(ticket.protocol) == PROTOCOL


def test_level_masks_come_from_the_trained_magnitudes(reference):
    root, _ = reference
    run = run_of(root)
    trained = load_checkpoint(run / "level_0" / "train" / "checkpoint.pt")["model"]
    mask = load_ticket(run / "level_1" / "ticket.safetensors").mask
    names = [n for n in mask if n != "fc.weight"]
    pruned = torch.cat([trained[n][~mask[n]].abs() for n in names])
    kept = torch.cat([trained[n][mask[n]].abs() for n in names])
    assert pruned.max() <= kept.min()


def test_level_zero_shares_the_rewind_training(reference, monkeypatch):
    root, _ = reference

    def no_training(*args, **kwargs):
        raise AssertionError("the rewind point is cached and must not be trained again")

    monkeypatch.setattr(rewind_module, "train", no_training)
    level0 = load_ticket(run_of(root) / "level_0" / "ticket.safetensors")
    model, step = rewind_point("mlp_1", data(), PROTOCOL, "5it", seed=1, data_seed=2, root=root,
                               device="cpu", progress=False)
    assert step == 5
    assert len(list(root.glob("rewind-*"))) == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, level0.state[k])


def test_finished_run_does_no_work(reference, monkeypatch):
    root, results = reference

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(imp_module, "train_group", no_training)
    monkeypatch.setattr(rewind_module, "train", no_training)
    again = run_imp(config(), data(), LEVELS, root, device="cpu", progress=False)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in results]
    assert [row["level"] for row in read_summary(run_of(root))] == list(range(LEVELS + 1))
    # Fewer levels: a prefix of the same run.
    assert [r.to_dict() for r in run_imp(config(), data(), 1, root, progress=False)] == [
        r.to_dict() for r in results[:2]
    ]


class Crash(Exception):
    pass


def crashing_data(after: int):
    """The dataset, except that it raises after serving `after` training batches."""
    ds = data()
    served = [0]
    original = ds.train_epoch

    def train_epoch(*args, **kwargs):
        for batch in original(*args, **kwargs):
            if served[0] >= after:
                raise Crash(f"killed after {after} batches")
            served[0] += 1
            yield batch

    ds.train_epoch = train_epoch
    return ds


def test_killed_run_resumes_to_exactly_the_same_tickets(reference, tmp_path, monkeypatch):
    root, _ = reference
    # 33 training batches in all (5 to the rewind point, 7 per level); crash in the rewind training,
    # mid-epoch and on epoch boundaries of several levels, and first only go to level 1 (extension).
    crashes = 0
    for after, levels in [(3, 1), (4, 1), (6, 1), (1, 1), (5, 3), (2, 3), (9, 3)]:
        with pytest.raises(Crash):
            run_imp(config(), crashing_data(after), levels, tmp_path, device="cpu", progress=False)
        crashes += 1

    # Crash after a level's training finished but before its result was recorded ...
    real_write = imp_module.write_json_atomic

    def fail_once_on_result(path, value):
        if path.name == "result.json":
            monkeypatch.setattr(imp_module, "write_json_atomic", real_write)
            raise Crash("killed before recording the result")
        return real_write(path, value)

    monkeypatch.setattr(imp_module, "write_json_atomic", fail_once_on_result)
    with pytest.raises(Crash):
        run_imp(config(), data(), LEVELS, tmp_path, device="cpu", progress=False)

    # ... and after recording it but before writing the next level's ticket.
    real_save = imp_module.save_ticket

    def fail_once_on_ticket(ticket, path):
        monkeypatch.setattr(imp_module, "save_ticket", real_save)
        raise Crash("killed before writing the next ticket")

    monkeypatch.setattr(imp_module, "save_ticket", fail_once_on_ticket)
    with pytest.raises(Crash):
        run_imp(config(), data(), LEVELS, tmp_path, device="cpu", progress=False)

    results = run_imp(config(), data(), LEVELS, tmp_path, device="cpu", progress=False)
    assert len(results) == LEVELS + 1 and crashes == 7
    assert run_of(tmp_path).name == run_of(root).name
    assert_same_runs(root, tmp_path)
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files may be left behind"


def test_train_ticket_reproduces_the_imp_level(reference, tmp_path, monkeypatch):
    root, results = reference
    ticket = load_ticket(results[2].ticket_path)
    res = train_ticket(ticket, data(), PROTOCOL, data_seed=2, root=tmp_path, device="cpu", progress=False)
    assert res.test_accuracy == results[2].test_accuracy and res.step == 12
    (train_dir,) = tmp_path.glob("train-*")
    assert json.loads((train_dir / "hparams.json").read_text())["ticket"] == ticket.content_hash()

    import elth.workflows.ticket_training as tt

    def no_training_allowed(members, *args, **kwargs):
        # A finished run may be "resumed" (the loop returns at once), but no step may run.
        for member in members:
            member.model.register_forward_pre_hook(lambda *a: (_ for _ in ()).throw(AssertionError("trained again")))
        return real_train(members, *args, **kwargs)

    real_train = tt.train_group
    monkeypatch.setattr(tt, "train_group", no_training_allowed)
    again = train_ticket(ticket, data(), PROTOCOL, data_seed=2, root=tmp_path, device="cpu", progress=False)
    assert again.test_accuracy == res.test_accuracy


def test_train_ticket_checks_the_dataset(reference):
    _, results = reference
    ticket = load_ticket(results[1].ticket_path)
    with pytest.raises(ElthError, match="cannot train on synthetic_c5_n64"):
        train_ticket(ticket, load_dataset("synthetic_c5_n64"), PROTOCOL, progress=False)


def test_train_ticket_needs_steps_left(reference):
    _, results = reference
    ticket = load_ticket(results[1].ticket_path)
    with pytest.raises(ElthError, match="nothing to train"):
        train_ticket(ticket, data(), PROTOCOL.replace(length="5it"), progress=False)


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ElthError, match="prune fraction"):
        run_imp(config(prune_fraction=1.5), data(), 1, tmp_path, progress=False)
    with pytest.raises(ElthError, match="data is"):
        run_imp(config(dataset="cifar10"), data(), 1, tmp_path, progress=False)
    with pytest.raises(RewindError, match="not before the end"):
        run_imp(config(rewind="3ep"), data(), 1, tmp_path, progress=False)
    with pytest.raises(ElthError, match="no such prunable weight"):
        run_imp(config(exclude=("nonexistent",)), data(), 1, tmp_path, progress=False)
    assert not list(tmp_path.glob("imp-*"))


def test_pruning_every_layer_and_rewind_zero(tmp_path):
    results = run_imp(config(exclude=(), rewind="0", prune_fraction=0.5), data(), 1, tmp_path, progress=False)
    ticket = load_ticket(results[1].ticket_path)
    assert not bool(ticket.mask["fc.weight"].all())
    assert results[1].kept == results[0].prunable - -(-results[0].prunable // 2)
    assert results[1].rewind_step == 0 and not list(tmp_path.glob("rewind-*"))


def test_levels_beyond_what_pruning_allows_are_refused_before_training(tmp_path, monkeypatch):
    """The depth check's limit is exactly where pruning itself would fail: IMP reaches it, and one level
    more is refused before any training (the check off, that level fails in its pruning instead)."""
    fast = config(prune_fraction=0.5, protocol=PROTOCOL.replace(length="2it", milestones=()), rewind="0")
    with pytest.raises(ElthError, match=r"IMP cannot reach level 99 of mlp_1: level (\d+) would prune into"):
        run_imp(fast, data(), 99, tmp_path, progress=False)
    assert not list(tmp_path.glob("imp-*"))  # nothing trained or written
    with pytest.raises(ElthError) as refused:
        run_imp(fast, data(), 99, tmp_path, progress=False)
    limit = int(str(refused.value).rsplit("at most ", 1)[1].split()[0])
    assert len(run_imp(fast, data(), limit, tmp_path, progress=False)) == limit + 1
    with pytest.raises(ElthError, match=f"IMP cannot reach level {limit + 1} "):
        run_imp(fast, data(), limit + 1, tmp_path, progress=False)
    monkeypatch.setattr(imp_module, "check_depth", lambda *a: None)
    with pytest.raises(ElthError, match="cannot prune .* more weights: only .* remain outside the excluded layers"):
        run_imp(fast, data(), limit + 1, tmp_path, progress=False)


@pytest.mark.parametrize("level", [0, 2])
def test_a_damaged_level_ticket_says_how_to_remake_it_and_deleting_it_does(reference, tmp_path, level):
    ref_root, _ = reference
    root = tmp_path / "store"
    shutil.copytree(ref_root, root)
    path = run_of(root) / f"level_{level}" / "ticket.safetensors"
    path.write_bytes(path.read_bytes()[:200])  # cut off, as a full disk or a copy stopped half-way leaves it
    with pytest.raises(TicketError, match="delete it and run again"):
        run_imp(config(), data(), LEVELS, root, device="cpu", progress=False)
    path.unlink()
    run_imp(config(), data(), LEVELS, root, device="cpu", progress=False)
    assert_same_runs(root, ref_root)
