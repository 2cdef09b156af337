"""IMP pinned to exact values, not to coarse metrics: the rewind weights against an independent
dense training written out here by hand, and the training steps of every level counted from the
batches the dataset actually served."""
import pytest
import torch
import torch.nn.functional as F

from elth.data import load_dataset
from elth.models import build_model
from elth.workflows.imp import IMPConfig, run_imp
from elth.tickets import load_ticket
from elth.training import Protocol

# 256 examples at batch 64: 4 steps per epoch, 12 in all; LR decay after 8 steps; momentum and weight
# decay so that a wrong step count or a wrong optimiser state changes the weights.
PROTOCOL = Protocol(length="3ep", batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-4,
                    milestones=("2ep",), warmup="0")
DATASET = "synthetic_1x8x8_n256"
REWIND_STEP = 5
END_STEP = 12
LEVELS = 2
SEED, DATA_SEED = 1, 2


class CountingData:
    """The dataset, recording the global step of every training batch it serves."""

    def __init__(self):
        self.inner = load_dataset(DATASET)
        self.served: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train_epoch(self, epoch, batch_size, seed, start=0, augment=True):
        ipe = self.inner.iterations_per_epoch(batch_size)
        for b, batch in enumerate(self.inner.train_epoch(epoch, batch_size, seed, start=start, augment=augment), start):
            self.served.append(epoch * ipe + b)
            yield batch


@pytest.fixture(scope="module")
def counted_run(tmp_path_factory):
    data = CountingData()
    config = IMPConfig(model="mlp_1", dataset=DATASET, protocol=PROTOCOL, rewind=f"{REWIND_STEP}it",
                       seed=SEED, data_seed=DATA_SEED)
    results = run_imp(config, data, LEVELS, tmp_path_factory.mktemp("imp_counted"), device="cpu", progress=False)
    return data.served, results


def hand_written_sgd(steps: int) -> list[dict[str, torch.Tensor]]:
    """Dense SGD with momentum and weight decay written out here, not elth's loop: the weights after
    0, 1, ..., `steps` steps."""
    data = load_dataset(DATASET)
    model = build_model("mlp_1", data.info.input_shape, data.info.num_classes, seed=SEED)
    ipe = data.iterations_per_epoch(PROTOCOL.batch_size)
    momentum = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    states = [{k: v.clone() for k, v in model.state_dict().items()}]
    step = 0
    while step < steps:
        epoch, b = divmod(step, ipe)
        x, y = next(iter(data.train_epoch(epoch, PROTOCOL.batch_size, DATA_SEED, start=b, augment=PROTOCOL.augment)))
        lr = PROTOCOL.lr * (PROTOCOL.gamma if step >= 2 * ipe else 1.0)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for n, p in model.named_parameters():
                g = p.grad + PROTOCOL.weight_decay * p
                momentum[n] = g if step == 0 else PROTOCOL.momentum * momentum[n] + g
                p -= lr * momentum[n]
        step += 1
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


def differs(a: dict, b: dict) -> bool:
    return any(not torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def test_rewind_weights_are_a_dense_training_to_exactly_the_rewind_step(counted_run):
    _, results = counted_run
    rewind = load_ticket(results[0].ticket_path).state
    by_hand = hand_written_sgd(REWIND_STEP + 1)
    assert_close(rewind, by_hand[REWIND_STEP])
    # The comparison can tell neighbouring steps apart (so an off-by-one rewind would fail it).
    assert differs(rewind, by_hand[REWIND_STEP - 1]) and differs(rewind, by_hand[REWIND_STEP + 1])
    # Every level's ticket holds those same weights under its mask.
    for r in results[1:]:
        ticket = load_ticket(r.ticket_path)
        for k, m in ticket.mask.items():
            assert torch.equal(ticket.state[k], rewind[k] * m)


def test_every_level_trains_from_the_rewind_step_to_the_end(counted_run):
    served, results = counted_run
    # Counted from the batches the dataset served: the rewind training, then each level.
    rewind_training = list(range(REWIND_STEP))
    level = list(range(REWIND_STEP, END_STEP))
    assert served == rewind_training + level * (LEVELS + 1)
    assert [r.end_step for r in results] == [END_STEP] * (LEVELS + 1)


def test_a_ticket_trains_from_its_rewind_step_to_the_end(counted_run, tmp_path):
    from elth.workflows import train_ticket

    _, results = counted_run
    data = CountingData()
    res = train_ticket(load_ticket(results[1].ticket_path), data, PROTOCOL, data_seed=DATA_SEED, root=tmp_path,
                       device="cpu", progress=False)
    assert data.served == list(range(REWIND_STEP, END_STEP))
    assert res.test_accuracy == results[1].test_accuracy  # the same run as IMP's level 1
