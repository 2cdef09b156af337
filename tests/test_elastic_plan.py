"""ETT plans: text syntax, the stretch/squeeze strategies, and plan validation against models."""
import pytest

from elth.elastic import (
    PlanError,
    check_compatible,
    format_plan,
    make_plan,
    parse_plan,
    squeeze,
    stretch,
    validate_plan,
)
from elth.elastic.plan import skeleton_model
from elth.errors import ElthError


# --- text syntax ---------------------------------------------------------------------------------

def test_one_list_applies_to_every_stage():
    assert parse_plan("0,1,2,1,2", 3) == ((0, 1, 2, 1, 2),) * 3


def test_one_list_per_stage_with_spaces():
    assert parse_plan(" 0, 1,2 ; 0,1 ;0", 3) == ((0, 1, 2), (0, 1), (0,))


@pytest.mark.parametrize("plan", [((0, 1, 2, 1, 2),) * 3, ((0, 1), (0, 1, 1), (0, 1, 1, 1), (0, 1, 1)), ((0,),)])
def test_format_then_parse_round_trip(plan):
    text = format_plan(plan)
    assert parse_plan(text, len(plan)) == plan
    assert format_plan(parse_plan(text, len(plan))) == text


def test_format_writes_one_list_per_stage():
    assert format_plan(((0, 1, 2, 1, 2), (0, 1, 1, 2, 2))) == "0,1,2,1,2;0,1,1,2,2"


@pytest.mark.parametrize(
    "text, fragment",
    [("", "empty"), ("0,,1", "empty entry"), ("0,a", "other than unit indices"), ("0,-1", "negative"),
     ("0,1;0,1", "2 stage lists but the model has 3")],
)
def test_parse_errors_are_plan_errors(text, fragment):
    with pytest.raises(PlanError, match=fragment):
        parse_plan(text, 3)


def test_plan_error_is_an_elth_error():
    assert issubclass(PlanError, ElthError) and issubclass(PlanError, ValueError)


# --- stretch -------------------------------------------------------------------------------------

def test_stretch_resnet20_to_32_both_orders():
    assert stretch(3, 5) == (0, 1, 2, 1, 2)
    assert stretch(3, 5, order="interpolation") == (0, 1, 1, 2, 2)


def test_stretch_repeats_whole_rounds_when_appending():
    assert stretch(3, 9) == (0, 1, 2, 1, 2, 1, 2, 1, 2)
    assert stretch(3, 9, order="interpolation") == (0, 1, 1, 1, 1, 2, 2, 2, 2)


def test_stretch_uneven_counts_favour_earlier_units():
    # ResNet-32 -> 44: units 1 and 2 replicated once, units 3 and 4 not at all.
    assert stretch(5, 7) == (0, 1, 2, 3, 4, 1, 2)
    assert stretch(5, 7, order="interpolation") == (0, 1, 1, 2, 2, 3, 4)
    # ResNet-32 -> 110: unit 1 four times, units 2-4 three times.
    plan = stretch(5, 18)
    assert [plan.count(u) - 1 for u in range(5)] == [0, 4, 3, 3, 3]
    assert plan == (0, 1, 2, 3, 4) + (1, 2, 3, 4) * 3 + (1,)
    interp = stretch(5, 18, order="interpolation")
    assert interp == (0,) + (1,) * 5 + (2,) * 4 + (3,) * 4 + (4,) * 4


def test_stretch_chosen_units():
    # Paper Section 4.1: replicating only the first block is the same either way.
    assert stretch(5, 9, units=[1]) == stretch(5, 9, units=[1], order="interpolation") == (0, 1, 1, 1, 1, 1, 2, 3, 4)
    # Copies of the first two blocks go right after block 2 when appending.
    assert stretch(5, 9, units=[2, 1]) == (0, 1, 2, 1, 2, 1, 2, 3, 4)
    assert stretch(5, 9, units=[1, 2], order="interpolation") == (0, 1, 1, 1, 2, 2, 2, 3, 4)
    assert stretch(5, 9, units=[3, 4]) == (0, 1, 2, 3, 4, 3, 4, 3, 4)


def test_stretch_single_unit_stage_replicates_its_transition():
    assert stretch(1, 4) == (0, 0, 0, 0)


def test_stretch_same_length_is_identity():
    assert stretch(4, 4) == (0, 1, 2, 3)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [(dict(n_source=5, n_target=3), "fewer"), (dict(n_source=3, n_target=5, order="sideways"), "unknown stretch order"),
     (dict(n_source=3, n_target=5, units=[3]), "cannot replicate unit 3"),
     (dict(n_source=3, n_target=5, units=[1, 1]), "twice"), (dict(n_source=3, n_target=5, units=[]), "no units")],
)
def test_stretch_errors(kwargs, fragment):
    with pytest.raises(PlanError, match=fragment):
        stretch(**kwargs)


# --- squeeze -------------------------------------------------------------------------------------

def test_squeeze_consecutive_drops_the_latest_units():
    assert squeeze(5, 3) == (0, 1, 2)
    assert squeeze(9, 5) == (0, 1, 2, 3, 4)


def test_squeeze_interval_keeps_the_first_unit_of_even_runs():
    assert squeeze(5, 3, mode="interval") == (0, 1, 3)
    assert squeeze(9, 5, mode="interval") == (0, 1, 3, 5, 7)
    assert squeeze(9, 3, mode="interval") == (0, 1, 5)
    assert squeeze(7, 5, mode="interval") == (0, 1, 3, 5, 6)
    assert squeeze(4, 1, mode="interval") == (0,)


def test_squeeze_exact_drop():
    assert squeeze(9, 5, drop=[5, 6, 7, 8]) == (0, 1, 2, 3, 4)
    assert squeeze(9, 5, drop=[1, 2, 3, 4]) == (0, 5, 6, 7, 8)


@pytest.mark.parametrize(
    "n_source, n_target", [(3, 5), (3, 9), (5, 7), (5, 18), (2, 4), (3, 6), (4, 6)]
)
def test_squeezes_invert_their_stretches(n_source, n_target):
    identity = tuple(range(n_source))
    appended = stretch(n_source, n_target)
    assert tuple(appended[i] for i in squeeze(n_target, n_source)) == identity
    interpolated = stretch(n_source, n_target, order="interpolation")
    assert tuple(interpolated[i] for i in squeeze(n_target, n_source, mode="interval")) == identity


@pytest.mark.parametrize(
    "kwargs, fragment",
    [(dict(n_source=3, n_target=5), "more"), (dict(n_source=5, n_target=3, mode="odd"), "unknown squeeze mode"),
     (dict(n_source=5, n_target=3, drop=[0, 1]), "transition"),
     (dict(n_source=5, n_target=3, drop=[4]), "drops 2, but 1 units"),
     (dict(n_source=5, n_target=3, drop=[4, 5]), "cannot drop unit 5"), (dict(n_source=5, n_target=0), "at least")],
)
def test_squeeze_errors(kwargs, fragment):
    with pytest.raises(PlanError, match=fragment):
        squeeze(**kwargs)


# --- make_plan -----------------------------------------------------------------------------------

def test_make_plan_per_stage_identity_stretch_or_squeeze():
    assert make_plan((2, 2, 2, 2), (2, 3, 4, 3)) == ((0, 1), (0, 1, 1), (0, 1, 1, 1), (0, 1, 1))
    assert make_plan((3, 5), (5, 3), order="interpolation", squeeze_mode="interval") == ((0, 1, 1, 2, 2), (0, 1, 3))


def test_make_plan_units_and_drop_apply_to_their_stages():
    assert make_plan((3, 5), (5, 3), units=[2], drop=[1, 2]) == ((0, 1, 2, 2, 2), (0, 3, 4))


@pytest.mark.parametrize(
    "args, kwargs, fragment",
    [(((3, 3), (3, 3, 3)), {}, "never change the number of stages"),
     (((3, 3), (5, 5)), dict(drop=[2]), "no stage of the target is shorter"),
     (((5, 5), (3, 3)), dict(units=[1]), "no stage of the target is longer"),
     (((2, 3), (4, 5)), dict(units=[2]), "stage 1: cannot replicate unit 2"),
     (((3, 3), (5, 5)), dict(order="nope"), "unknown stretch order")],
)
def test_make_plan_errors(args, kwargs, fragment):
    with pytest.raises(PlanError, match=fragment):
        make_plan(*args, **kwargs)


# --- validation against models ---------------------------------------------------------------------

R20, R32 = "cifar_resnet_20", "cifar_resnet_32"


def test_valid_plans_pass():
    validate_plan(((0, 1, 2, 1, 2),) * 3, R20, R32)
    validate_plan(((0, 1, 2),) * 3, R32, R20)
    # A non-transition unit may take unit 0 when the shapes agree (stage 1 has no shortcut conv).
    validate_plan(((0, 0, 0, 1, 2), (0, 1, 2, 1, 2), (0, 1, 2, 1, 2)), R20, R32)
    validate_plan(((0, 1, 2, 3, 4),) * 3, R32, R32)


@pytest.mark.parametrize(
    "plan, fragment",
    [(((0, 1, 2, 1),) * 3, r"fills 4 of the 5 target units, leaving layer1\.4 unfilled"),
     (((0, 1, 2, 1, 2, 1),) * 3, "has 6 entries"),
     (((1, 1, 2, 1, 2),) * 3, "transition unit layer1.0 to source unit 1"),
     (((0, 1, 2, 3, 2),) * 3, "names source unit 3"),
     (((0, 1, 2, 1, 2), (0, 0, 2, 1, 2), (0, 1, 2, 1, 2)), r"layer2\.1 cannot take source unit layer2\.0: "
      r"shortcut\.0\.weight exists only in the source unit"),
     (((0, 1, 2, 1, 2),) * 2, "2 stages"),
     (((0, 1, 2, 1, "2"),) * 3, "not a unit index")],
)
def test_invalid_plans(plan, fragment):
    with pytest.raises(PlanError, match=fragment):
        validate_plan(plan, R20, R32)


@pytest.mark.parametrize(
    "source, target, fragment",
    [("cifar_resnet_20", "cifar_vgg_13", "one family and width"),
     ("cifar_resnet_20", "cifar_resnet_32_32", r"width 16\) vs cifar_resnet \(width 32"),
     ("cifar_vgg_13", "cifar_vgg_13_fc2", "one family"),
     ("mlp_2", "cifar_resnet_20", "one family")],
)
def test_different_family_or_width_is_refused(source, target, fragment):
    with pytest.raises(PlanError, match=fragment):
        check_compatible(source, target)


def test_different_input_shape_or_classes_is_refused():
    src = skeleton_model("cifar_resnet_20", (3, 32, 32), 10)
    with pytest.raises(PlanError, match="inputs of shape"):
        validate_plan(((0, 1, 2),) * 3, src, skeleton_model("cifar_resnet_20", (1, 32, 32), 10))
    with pytest.raises(PlanError, match="10 classes but the target 100"):
        validate_plan(((0, 1, 2),) * 3, src, skeleton_model("cifar_resnet_20", (3, 32, 32), 100))


def test_single_unit_stage_needs_matching_shapes():
    # VGG FC stage: 512 -> 512 hidden layers, so its lone transition can be replicated.
    validate_plan(((0, 1),) * 5 + ((0, 0, 0, 0),), "cifar_vgg_13_fc2", "cifar_vgg_13_fc5")
    # MLP-1's only hidden layer reads the input (784 wide), MLP-2's second reads 300.
    with pytest.raises(PlanError, match=r"mlp_1 has no unit to replicate in stage 1: its only unit there, hidden\.0, is the stage.s transition.*weight has shape"):
        validate_plan(((0, 0),), skeleton_model("mlp_1", (1, 28, 28)), skeleton_model("mlp_2", (1, 28, 28)))
