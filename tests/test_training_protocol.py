import json

import pytest

from elth.errors import ElthError
from elth.training import PRESETS, Protocol, ProtocolError, default_rewind, parse_steps, preset


@pytest.mark.parametrize(
    "text, expected",
    [("160ep", 160 * 391), ("1000it", 1000), ("5ep100it", 5 * 391 + 100), ("0", 0), ("0it", 0), (" 2EP ", 782)],
)
def test_parse_steps(text, expected):
    assert parse_steps(text, 391) == expected


@pytest.mark.parametrize("text", ["", "5", "ep", "1.5ep", "100it5ep", "-3ep", "3 ep", "3epochs", None, 7])
def test_parse_steps_rejects_bad_text_with_a_clear_error(text):
    with pytest.raises(ElthError, match="160ep"):
        parse_steps(text, 391)


def test_protocol_total_steps_and_defaults():
    p = Protocol()
    assert p.total_steps(391) == 160 * 391
    assert p.milestone_steps(391) == [80 * 391, 120 * 391]
    assert (p.batch_size, p.lr, p.momentum, p.weight_decay, p.gamma, p.augment) == (128, 0.1, 0.9, 1e-4, 0.1, True)


def test_lr_schedule_decays_at_milestones_and_warms_up_linearly():
    p = Protocol(length="10it", lr=0.4, milestones=("6it", "8it"), warmup="4it")
    lrs = [p.lr_at(s, 100) for s in range(10)]
    assert lrs[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lrs[4:6] == pytest.approx([0.4, 0.4])
    assert lrs[6:8] == pytest.approx([0.04, 0.04])
    assert lrs[8:] == pytest.approx([0.004, 0.004])


def test_milestones_given_out_of_order_are_the_same_protocol():
    # One schedule, one protocol: the same run key (and run directory) however the list was written.
    assert Protocol(milestones=("120ep", "80ep")) == Protocol(milestones=("80ep", "120ep"))
    assert Protocol(milestones=("700it", "90it", "300it")).milestones == ("90it", "300it", "700it")
    assert Protocol(milestones=("3ep", "100it")).milestones == ("3ep", "100it")  # mixed units: ordered when used
    assert Protocol(milestones=("3ep", "100it")).milestone_steps(50) == [100, 150]


def test_to_dict_round_trips_through_json():
    p = Protocol(length="5ep100it", milestones=("1ep", "3ep"), warmup="10it", augment=False)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["milestones"] == ["1ep", "3ep"]
    q = Protocol.from_dict(d)
    assert q == p and hash(q) == hash(p)


def test_from_dict_rejects_unknown_settings():
    with pytest.raises(ProtocolError, match="nesterov"):
        Protocol.from_dict({**Protocol().to_dict(), "nesterov": True})


@pytest.mark.parametrize(
    "changes",
    [{"length": "abc"}, {"milestones": ("80 epochs",)}, {"warmup": "x"}, {"batch_size": 0},
     {"batch_size": 1.5}, {"lr": 0}, {"lr": -1}, {"momentum": 1.0}, {"weight_decay": -1e-4}],
)
def test_invalid_protocols_raise_elth_errors(changes):
    with pytest.raises(ElthError):
        Protocol(**changes)


def test_paper_presets_reproduce_table_4():
    cifar = preset("paper", "cifar10", "cifar_resnet_20")
    assert cifar == Protocol(length="160ep", batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                             milestones=("80ep", "120ep"), gamma=0.1, warmup="0it")
    assert preset("paper", "cifar10", "cifar_vgg_16") == cifar
    assert preset("paper", "svhn", "cifar_resnet_56") == cifar
    imagenet = preset("paper", "imagenet", "imagenet_resnet_18")
    assert (imagenet.length, imagenet.batch_size, imagenet.lr, imagenet.milestones, imagenet.warmup) == (
        "90ep", 1024, 0.4, ("30ep", "60ep", "80ep"), "5ep")
    assert (imagenet.momentum, imagenet.weight_decay, imagenet.gamma) == (0.9, 1e-4, 0.1)
    mlp = preset("paper", "fashion_mnist", "mlp_2")
    assert (mlp.length, mlp.batch_size, mlp.lr, mlp.momentum, mlp.weight_decay, mlp.milestones) == (
        "40ep", 128, 0.1, 0.0, 0.0, ())
    assert preset("paper", "mnist", "mlp_4") == mlp


def test_short_and_smoke_presets_fit_any_dataset():
    for dataset, model in [("cifar10", "cifar_resnet_20"), ("imagenet", "imagenet_resnet_18"),
                           ("fashion_mnist", "mlp_2"), ("digits", "cifar_vgg_11")]:
        short = preset("short", dataset, model)
        assert (short.length, short.batch_size, short.lr, short.milestones, short.warmup) == (
            "3ep", 128, 0.1, ("2ep",), "0it")
        smoke = preset("smoke", dataset, model)
        assert smoke.total_steps(1000) < 50
    assert set(PRESETS) == {"paper", "short", "smoke"}


def test_schedule_warnings_name_what_never_takes_effect():
    cifar = preset("paper", "cifar10", "cifar_resnet_20")
    assert cifar.schedule_warnings(391) == []  # every preset's schedule takes effect in its training
    assert preset("smoke", "cifar10", "cifar_resnet_20").schedule_warnings(1) == []
    shortened = cifar.replace(length="100ep")  # --epochs 100 on the paper preset: 120ep never comes
    assert shortened.schedule_warnings(391) == [
        "LR milestone(s) 120ep lie at or beyond the end of training (100ep, 39100 steps), so the LR is never "
        "decayed there (give --milestones to set them)"]
    # a milestone at the last step's index + 1 (the end) never applies; one step earlier it does
    assert cifar.replace(length="20it", milestones=("19it",)).schedule_warnings(10) == []
    assert len(cifar.replace(length="20it", milestones=("20it",)).schedule_warnings(10)) == 1
    assert cifar.replace(length="2ep", milestones=(), warmup="3ep").schedule_warnings(10) == [
        "the warmup (3ep) is longer than the training (2ep): the LR never reaches its peak 0.1"]
    assert cifar.replace(length="2ep", milestones=(), warmup="2ep").schedule_warnings(10) == []


def test_unknown_preset_model_or_dataset():
    with pytest.raises(ProtocolError, match="paper"):
        preset("fast", "cifar10", "cifar_resnet_20")
    with pytest.raises(ElthError):
        preset("paper", "cifar10", "resnet_20")
    with pytest.raises(ElthError):
        preset("paper", "cifar100", "cifar_resnet_20")


def test_default_rewind_points():
    assert default_rewind("cifar_resnet_20", "cifar10") == "1000it"
    assert default_rewind("cifar_vgg_16", "cifar10") == "200it"
    assert default_rewind("imagenet_resnet_18", "imagenet") == "5ep"
    assert default_rewind("mlp_2", "fashion_mnist") == "0"
    assert parse_steps(default_rewind("mlp_2", "mnist"), 469) == 0
