"""Numbers are checked where they enter the Python API: protocols, IMP settings, models, experiment specs."""
from __future__ import annotations

import math

import pytest

from elth.experiments.spec import Setup, SpecError
from elth.limits import MAX_SEED, BadNumberError, check_int, check_real, check_seed
from elth.models import MAX_PARAMETERS, ModelTooLargeError, build_model, parse_model_name
from elth.models.registry import parameter_bound, parameter_count
from elth.training import Protocol, ProtocolError
from elth.workflows.imp import IMPConfig, IMPError


@pytest.mark.parametrize("change, message", [
    ({"lr": math.inf}, "learning rate must be a finite number"),
    ({"lr": 0.0}, "learning rate must be above 0"),
    ({"weight_decay": math.nan}, "weight decay must be a finite number"),
    ({"weight_decay": -1e-4}, "weight decay must be at least 0"),
    ({"gamma": math.inf}, "LR decay factor (gamma) must be a finite number"),
    ({"momentum": 1.0}, "momentum must be below 1"),
    ({"lr": True}, "learning rate must be a number"),
    ({"length": "0it"}, "training length must be at least one step"),
    ({"batch_size": 2.0}, "batch size must be a positive integer"),
    ({"augment": "yes"}, "augment must be true or false"),
])
def test_a_protocol_refuses_numbers_that_cannot_train(change, message):
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Protocol().replace(**change)


def test_imp_settings_are_checked_when_made():
    protocol = Protocol(length="12it")
    with pytest.raises(IMPError, match="seed must be an integer from 0 to 4294967295"):
        IMPConfig("mlp_1", "digits", protocol, "0", seed=2**70)
    with pytest.raises(IMPError, match="data seed must be an integer"):
        IMPConfig("mlp_1", "digits", protocol, "0", data_seed=-1)
    with pytest.raises(IMPError, match="prune fraction must be a finite number"):
        IMPConfig("mlp_1", "digits", protocol, "0", prune_fraction=math.nan)


def test_seeds_and_numbers():
    assert check_seed(MAX_SEED) == MAX_SEED
    for bad in (-1, MAX_SEED + 1, 1.0, True, "3"):
        with pytest.raises(BadNumberError):
            check_seed(bad)
    with pytest.raises(BadNumberError, match="n must be at most 3, got 4"):
        check_int(4, "n", high=3)
    with pytest.raises(BadNumberError, match="x must be above 0, got 0"):
        check_real(0, "x", low=0, low_open=True)


def test_models_beyond_the_limits_are_refused_before_any_memory_is_used():
    with pytest.raises(ModelTooLargeError, match="1,001 units"):
        parse_model_name("mlp_1001")
    with pytest.raises(ModelTooLargeError, match="units"):
        parse_model_name("cifar_resnet_2006")  # 1001 residual blocks
    with pytest.raises(ModelTooLargeError, match="parameters"):
        build_model("cifar_resnet_8_20000", (3, 32, 32), 10)
    with pytest.raises(ModelTooLargeError, match="parameters"):
        build_model("mlp_1", (3, 2000, 2000), 10)  # 12 million inputs x 300
    with pytest.raises(BadNumberError, match="seed"):
        build_model("mlp_1", (1, 8, 8), 10, seed=2**64)


@pytest.mark.parametrize("name, shape, classes", [
    ("mlp_3", (1, 28, 28), 10), ("cifar_resnet_20", (3, 32, 32), 10), ("cifar_resnet_14_32", (3, 32, 32), 100),
    ("imagenet_resnet_18", (3, 224, 224), 1000), ("cifar_vgg_13_fc3", (3, 32, 32), 10),
])
def test_the_cheap_parameter_bound_is_an_upper_bound(name, shape, classes):
    exact = parameter_count(name, shape, classes)
    assert exact <= parameter_bound(parse_model_name(name), shape, classes) < 5 * exact + 10**6
    assert exact < MAX_PARAMETERS


@pytest.mark.parametrize("change, message", [
    ({"protocol": (("lr", math.inf),)}, "learning rate must be a finite number"),
    ({"protocol": (("lenght", "3ep"),)}, "lenght"),
    ({"prune_fraction": math.nan}, "prune fraction must be a finite number"),
    ({"levels": (1.5,)}, "an IMP level must be an integer"),
    ({"seeds": 2.0}, "the number of seeds must be an integer"),
])
def test_an_experiment_spec_with_unusable_numbers_is_refused(change, message):
    setup = Setup(**{"dataset": "digits", "members": ("mlp_1", "mlp_2"), "levels": (1,), **change})
    with pytest.raises(SpecError, match=message):
        setup.validate()
