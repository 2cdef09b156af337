import json
import math
import tempfile
from pathlib import Path

import pytest
import torch

from elth.data.base import synthetic
from elth.errors import ElthError
from elth.files import CHECKPOINT_FILE
from elth.models import build_model
from elth.training import (
    CheckpointError,
    MaskError,
    Protocol,
    TrainResult,
    evaluate,
    train,
)
from elth.training.checkpoint import load_checkpoint

SHAPE = (3, 8, 8)
CLASSES = 4
# 40 training images at batch 8: 5 iterations per epoch; 3 epochs = 15 steps.
PROTOCOL = Protocol(length="3ep", batch_size=8, lr=0.05, milestones=("1ep", "2ep3it"), warmup="2it")


@pytest.fixture
def tmp_path():
    """A private temporary directory (not under pytest's shared, pruned base directory)."""
    with tempfile.TemporaryDirectory(prefix="elth-train-") as d:
        yield Path(d)


def tiny_data(seed: int = 1):
    return synthetic(input_shape=SHAPE, num_classes=CLASSES, num_train=40, num_test=16, seed=seed)


def tiny_model(seed: int = 0, name: str = "cifar_resnet_8"):
    return build_model(name, SHAPE, CLASSES, seed=seed)


def run(model=None, data=None, protocol=PROTOCOL, **kwargs) -> tuple[torch.nn.Module, TrainResult]:
    model = tiny_model() if model is None else model
    kwargs.setdefault("progress", False)
    kwargs.setdefault("device", "cpu")
    result = train(model, data if data is not None else tiny_data(), protocol, **kwargs)
    return model, result


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def assert_different_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_training_changes_weights_and_reports_a_result():
    model, result = run()
    assert result.step == 15
    assert 0.0 <= result.test_accuracy <= 1.0
    assert result.test_loss > 0 and math.isfinite(result.train_loss) and result.seconds > 0
    assert_different_state(model, tiny_model())
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_split_training_equals_uninterrupted_when_the_optimiser_has_no_state():
    # Batches and LR are functions of the global step: 0 -> 7 -> 15 equals 0 -> 15 exactly.
    plain_sgd = PROTOCOL.replace(momentum=0.0)
    whole, _ = run(protocol=plain_sgd)
    split, _ = run(protocol=plain_sgd, end_step=7)
    run(split, protocol=plain_sgd, start_step=7)
    assert_same_state(whole, split)


def test_continuing_in_the_same_out_dir_carries_momentum(tmp_path):
    whole, _ = run()
    split, first = run(out_dir=tmp_path, end_step=7)
    assert first.step == 7
    run(split, out_dir=tmp_path, start_step=7)
    assert_same_state(whole, split)


def test_killed_run_resumes_with_bit_identical_weights(tmp_path):
    whole, whole_result = run()

    class Killed(Exception):
        pass

    def kill_at_12(step, model):
        if step == 12:
            raise Killed

    with pytest.raises(Killed):
        run(out_dir=tmp_path, callback=kill_at_12)
    assert load_checkpoint(tmp_path / CHECKPOINT_FILE)["step"] == 10  # end of epoch 2

    steps_seen = []
    resumed, result = run(out_dir=tmp_path, callback=lambda s, m: steps_seen.append(s))
    assert steps_seen == list(range(11, 16))
    assert_same_state(whole, resumed)
    assert result.step == 15 and result.test_accuracy == whole_result.test_accuracy
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15]


def test_finished_run_returns_its_recorded_result_and_final_weights(tmp_path):
    trained, result = run(out_dir=tmp_path)
    calls = []
    again, again_result = run(out_dir=tmp_path, callback=lambda s, m: calls.append(s))
    assert calls == []
    assert again_result == result
    assert_same_state(trained, again)
    recorded = json.loads((tmp_path / "result.json").read_text())
    assert recorded == {"status": "finished", **result.to_dict()}


def test_a_longer_end_extends_a_finished_run(tmp_path):
    whole, _ = run()
    part, _ = run(out_dir=tmp_path, end_step=10)
    extended, result = run(out_dir=tmp_path)
    assert result.step == 15
    assert_same_state(whole, extended)


def test_incompatible_checkpoints_are_refused(tmp_path):
    run(out_dir=tmp_path, end_step=5)
    with pytest.raises(CheckpointError, match="data_seed"):
        run(out_dir=tmp_path, data_seed=1)
    with pytest.raises(CheckpointError, match="protocol"):
        run(out_dir=tmp_path, protocol=PROTOCOL.replace(lr=0.1))
    with pytest.raises(CheckpointError, match="other weights"):
        run(tiny_model(seed=1), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="past the requested end"):
        run(out_dir=tmp_path, end_step=3)


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint .truncated, damaged or not written by torch.save"):
        run(out_dir=tmp_path)


def test_a_checkpoint_holding_code_is_refused_in_one_sentence_without_warnings(tmp_path, recwarn):
    # A Python object that is not a tensor: torch raises ~1,000 characters on loading it with
    # weights_only; elth says what the file is in one sentence.
    torch.save({"version": 1, "hook": print}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError) as e:
        run(out_dir=tmp_path)
    message = str(e.value)
    assert "holds a Python object (print)" in message and "refuses files that could run code" in message
    assert "\n" not in message and len(message) < 300 + len(str(tmp_path))
    # Pickle protocol 4: torch warns before it fails; the error alone is shown.
    torch.save({"version": 1}, tmp_path / CHECKPOINT_FILE, pickle_protocol=4)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        run(out_dir=tmp_path)
    assert not [w for w in recwarn if "pickle" in str(w.message)]


def random_mask(model, density=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density for n, p in model.named_parameters()
            if n in model.prunable_names()}


def test_mask_keeps_pruned_weights_and_their_momentum_exactly_zero(tmp_path):
    model = tiny_model()
    mask = random_mask(model)
    params = dict(model.named_parameters())
    assert all(bool((params[n][~m] != 0).any()) for n, m in mask.items())  # pruning has work to do
    before = {n: params[n].detach().clone() for n in mask}
    violations = []

    def check(step, m):
        p = dict(m.named_parameters())
        violations.extend((step, n) for n, keep in mask.items() if bool((p[n][~keep] != 0).any()))

    run(model, mask=mask, out_dir=tmp_path, callback=check)
    assert violations == []
    for n, keep in mask.items():
        assert not torch.equal(params[n][keep], before[n][keep]), n  # kept weights did train
    state = load_checkpoint(tmp_path / CHECKPOINT_FILE)["optimizer"]["state"]
    names = [n for n, _ in model.named_parameters()]
    for i, n in enumerate(names):
        if n in mask:
            momentum = state[i]["momentum_buffer"]
            assert torch.count_nonzero(momentum[~mask[n]]) == 0, n
            assert torch.count_nonzero(momentum[mask[n]]) > 0, n


def test_masked_resume_is_bit_identical(tmp_path):
    mask = random_mask(tiny_model())
    whole, _ = run(mask=mask)
    run(mask=mask, out_dir=tmp_path, end_step=8)
    resumed, _ = run(mask=mask, out_dir=tmp_path)
    assert_same_state(whole, resumed)
    with pytest.raises(CheckpointError, match="mask"):
        run(mask=random_mask(tiny_model(), seed=1), out_dir=tmp_path)


def test_masks_that_do_not_fit_the_model_are_refused():
    model = tiny_model()
    with pytest.raises(MaskError, match="does not have"):
        run(model, mask={"nope.weight": torch.ones(3)})
    with pytest.raises(MaskError, match="shape"):
        run(model, mask={"fc.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(MaskError, match="0/1"):
        run(model, mask={"fc.weight": torch.full(model.fc.weight.shape, 0.5)})


def test_eval_every_and_metrics_lines(tmp_path):
    run(out_dir=tmp_path, eval_every="4it")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 5, 8, 10, 12, 15]
    assert [r["test_accuracy"] is not None for r in rows] == [True, False, True, False, True, True]
    for r in rows:
        assert r["lr"] == pytest.approx(PROTOCOL.lr_at(r["step"] - 1, 5))
        assert r["epoch"] == pytest.approx(r["step"] / 5)
        assert r["images_per_second"] > 0 and r["seconds"] > 0
        assert 0 <= r["train_accuracy"] <= 1 and r["train_loss"] > 0
    run_info = json.loads((tmp_path / "run.json").read_text())
    assert run_info["protocol"] == PROTOCOL.to_dict() and run_info["end_step"] == 15


def test_data_seed_sets_order_and_augmentation_deterministically():
    a, _ = run(data_seed=3)
    b, _ = run(data_seed=3)
    c, _ = run(data_seed=4)
    assert_same_state(a, b)
    assert_different_state(a, c)


def test_mlp_learns_the_synthetic_task():
    data = synthetic(input_shape=(1, 8, 8), num_classes=CLASSES, num_train=256, num_test=128, seed=2)
    model = build_model("mlp_1", (1, 8, 8), CLASSES, seed=0)
    protocol = Protocol(length="6ep", batch_size=32, lr=0.05, milestones=(), augment=False)
    _, result = run(model, data, protocol)
    assert result.test_accuracy >= 0.9


def test_bf16_autocast_trains():
    _, result = run(precision="bf16")
    assert math.isfinite(result.test_loss) and math.isfinite(result.train_loss)
    with pytest.raises(ElthError, match="precision"):
        run(precision="fp16")


def test_zero_length_call_trains_nothing_but_reports():
    model = tiny_model()
    _, result = run(model, start_step=5, end_step=5)
    assert result.step == 5 and result.test_accuracy is not None
    assert_same_state(model, tiny_model())
    with pytest.raises(ElthError):
        run(start_step=6, end_step=5)
    with pytest.raises(ElthError):
        run(eval_every="0")


def test_evaluate_restores_the_training_mode():
    model = tiny_model()
    model.train()
    acc, loss = evaluate(model, tiny_data())
    assert 0 <= acc <= 1 and loss > 0 and model.training
    model.eval()
    evaluate(model, tiny_data(), batch_size=5)
    assert not model.training
