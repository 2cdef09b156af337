"""FLOPs accounting against hand counts."""

from elth.flops import forward_macs, training_flops
from elth.masks import full_mask
from elth.models import build_model


def test_mlp_macs_are_the_weight_count():
    m = build_model("mlp_2", (1, 28, 28), 10)
    assert forward_macs(m) == 784 * 300 + 300 * 300 + 300 * 100 + 100 * 10


def test_masked_macs_count_only_kept_weights():
    m = build_model("mlp_2", (1, 28, 28), 10)
    mask = full_mask(m)
    mask["hidden.0.weight"][:, :392] = False
    assert forward_macs(m, mask) == 392 * 300 + 300 * 300 + 300 * 100 + 100 * 10


def test_conv_macs_use_output_positions():
    m = build_model("cifar_resnet_20")
    # The published count for ResNet-20 on 32x32 inputs is about 40.8M multiply-adds.
    assert abs(forward_macs(m) - 40.81e6) < 0.01e6
    mask = full_mask(m)
    mask["conv.weight"].zero_()
    assert forward_macs(m) - forward_macs(m, mask) == 16 * 3 * 9 * 32 * 32


def test_training_flops():
    assert training_flops(10, steps=2, batch_size=4) == 3 * 2 * 10 * 2 * 4
