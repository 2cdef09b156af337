"""The paper's code's block-mapping strings (source unit -> target units) read as elth plans."""
import pytest

from elth.elastic.block_mapping import block_mapping_plan
from elth.elastic.plan import PlanError


def test_a_cifar_resnet_map_applies_to_every_stage():
    assert block_mapping_plan("0:0;1:1,3;2:2,4", "cifar_resnet_20", "cifar_resnet_32") == ((0, 1, 2, 1, 2),) * 3
    assert block_mapping_plan("0:0;1:1,2;2:3,4", "cifar_resnet_20", "cifar_resnet_32") == ((0, 1, 1, 2, 2),) * 3
    # squeezing: a source unit that fills no target unit is dropped
    assert block_mapping_plan("0:0;1:1;3:2", "cifar_resnet_32", "cifar_resnet_20") == ((0, 1, 3),) * 3


def test_imagenet_resnets_and_vggs_take_one_map_per_stage():
    text = "0:0;1:1,2|0:0;1:1,2,3|0:0;1:1,2,3,4,5|0:0;1:1,2"
    assert block_mapping_plan(text, "imagenet_resnet_18", "imagenet_resnet_34") == (
        (0, 1, 1), (0, 1, 1, 1), (0, 1, 1, 1, 1, 1), (0, 1, 1))
    # VGG-11 (stages of 1, 1, 2, 2, 2 conv layers) -> VGG-13 (2, 2, 2, 2, 2): a lone transition replicated
    assert block_mapping_plan("0:0,1|0:0,1|0:0;1:1|0:0;1:1|0:0;1:1", "cifar_vgg_11", "cifar_vgg_13") == (
        (0, 0), (0, 0), (0, 1), (0, 1), (0, 1))
    with pytest.raises(PlanError, match="takes one map per stage .5, separated by '.'., got 1"):
        block_mapping_plan("0:0;1:1,2", "cifar_vgg_13", "cifar_vgg_16")


def test_vgg_nfc_maps_its_classifier_entries_and_lenet_its_fc_layers():
    # VGG-nFC: hidden FC layers are classifier.0, .2, .4 (a ReLU after each); the conv stages stay
    assert block_mapping_plan("0:0,2,4", "cifar_vgg_13_fc2", "cifar_vgg_13_fc4") == ((0, 1),) * 5 + ((0, 0, 0),)
    # LeNet 300-300-100 -> 300-300-300-100: fc_layers 0 and 1 are hidden, 2 is the layer to 100
    assert block_mapping_plan("0:0;1:1,2;2:3", "mlp_2", "mlp_3") == ((0, 1, 1),)
    with pytest.raises(PlanError, match="layer 2 .the source's layer after its hidden layers. must map to layer 3"):
        block_mapping_plan("0:0;1:1,2,3", "mlp_2", "mlp_3")


@pytest.mark.parametrize("text, says", [
    ("0:0;1:1,3", "target unit(s) 2, 4 of stage 1 are filled by no source unit"),
    ("0:0;1:1,3;2:2,4,5", "stage 1 of the target has no unit 5"),
    ("0:0;1:1,3;3:2,4", "stage 1 of the source has no unit 3"),
    ("0:0;1:1,3;2:3,4", "target unit 3 of stage 1 is filled twice"),
    ("0:0;1:1;1:3;2:2,4", "source unit 1 is mapped twice"),
    ("0-0", "'0-0' is not SOURCE:TARGET[,TARGET...]"),
    ("0:0;1:\u0661", "is not SOURCE:TARGET"),
    ("0:0;1:1,3;2:2,4|0:0", "takes one map for all its stages, without '|'"),
])
def test_a_bad_string_is_one_clear_error(text, says):
    with pytest.raises(PlanError) as e:
        block_mapping_plan(text, "cifar_resnet_20", "cifar_resnet_32")
    assert says in str(e.value) and text in str(e.value)


def test_families_without_the_convention_are_told_to_use_a_plan():
    with pytest.raises(PlanError, match="not for vit_2; give the plan with --plan"):
        block_mapping_plan("0:0;1:1,2", "vit_2", "vit_3")
