"""Importing open_lth lottery runs: real files written by open_lth (tests/fixtures/open_lth)."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from elth import cli
from elth.data import load_dataset
from elth.data.base import DatasetInfo
from elth.data.errors import DatasetNotFoundError
from elth.data.idx import IDX_FILES
from elth.data.paths import find_files
from elth.elastic import transform
from elth.open_lth import OpenLTHError, find_levels, import_run, model_of
from elth.tickets import load_ticket, save_ticket
from elth.training.loop import evaluate

FIXTURES = Path(__file__).parent / "fixtures" / "open_lth"
MLP_RUN = FIXTURES / "lottery_867ed9aaff0a6c6baa7f0acb487d8c14"  # mnist_lenet_300_100, 30it, no rewinding
RESNET_RUN = FIXTURES / "lottery_35990e76d61e6cfd6a10ed7f40272f5c"  # cifar_resnet_20, 4it, rewinding to 2it


def _open_lth(run: Path, level: int, name: str) -> dict:
    return torch.load(run / "replicate_1" / f"level_{level}" / "main" / name, weights_only=True)


def _logged(run: Path, level: int, metric: str) -> dict[int, float]:
    lines = (run / "replicate_1" / f"level_{level}" / "main" / "logger").read_text().split()
    return {int(step): float(v) for name, step, v in (line.split(",") for line in lines) if name == metric}


def _unpruned(run: Path, level: int) -> int:
    report = json.loads((run / "replicate_1" / f"level_{level}" / "main" / "sparsity_report.json").read_text())
    return int(report["unpruned"])


def test_resnet_levels_carry_open_lth_weights_and_masks_under_elth_names():
    imported = import_run(RESNET_RUN)
    assert [(lv.replicate, lv.level) for lv, _ in imported] == [(1, 0), (1, 2)]
    raw_state, raw_mask = _open_lth(RESNET_RUN, 2, "model_ep0_it2.pth"), _open_lth(RESNET_RUN, 2, "mask.pth")
    level0 = _open_lth(RESNET_RUN, 0, "model_ep0_it2.pth")
    (_, t0), (_, t2) = imported
    assert t2.model == "cifar_resnet_20" and t2.dataset.name == "cifar10"
    assert (t2.rewind, t2.rewind_step) == ("2it", 2)
    # blocks are numbered through all stages: block 4 is stage 2's second block, block 6 stage 3's first
    for theirs, ours in (("blocks.4.conv1.weight", "layer2.1.conv1.weight"), ("blocks.6.shortcut.0.weight",
                         "layer3.0.shortcut.0.weight"), ("blocks.2.bn2.running_var", "layer1.2.bn2.running_var"),
                         ("conv.weight", "conv.weight"), ("fc.weight", "fc.weight")):
        assert torch.equal(t2.state[ours], raw_state[theirs]), ours
    assert torch.equal(t2.mask["layer2.1.conv1.weight"], raw_mask["blocks.4.conv1.weight"].bool())
    # the dense rewind weights are level 0's, unmasked
    assert torch.equal(t2.dense["layer2.1.conv1.weight"], level0["blocks.4.conv1.weight"])
    # kept weights as open_lth counted them
    assert sum(int(m.sum()) for m in t2.mask.values()) == _unpruned(RESNET_RUN, 2)
    assert t0.sparsity == 0.0 and round(t2.sparsity, 4) == 0.36
    assert t2.protocol["length"] == "4it" and t2.protocol["milestones"] == ["80ep", "120ep"]
    assert t2.protocol["momentum"] == 0.9 and t2.protocol["weight_decay"] == 0.0001
    p = t2.provenance
    assert (p["source"], p["run"], p["replicate"], p["level"]) == ("open_lth", RESNET_RUN.name, 1, 2)
    assert p["test_accuracy"] == _logged(RESNET_RUN, 2, "test_accuracy")[4]


def test_imported_resnet_ticket_saves_and_stretches(tmp_path):
    (_, ticket), = import_run(RESNET_RUN, levels={2})
    path = save_ticket(ticket, tmp_path / "r20.safetensors")
    r32 = transform(load_ticket(path), "cifar_resnet_32")
    assert r32.model == "cifar_resnet_32"
    # appending: stage 1's fourth block is a copy of its second (layer1.1), weights and mask
    assert torch.equal(r32.state["layer1.3.conv1.weight"], ticket.state["layer1.1.conv1.weight"])
    assert torch.equal(r32.mask["layer1.3.conv1.weight"], ticket.mask["layer1.1.conv1.weight"])


def test_mlp_names_and_mask_counts():
    imported = import_run(MLP_RUN)
    for lv, t in imported:
        assert t.model == "mlp_1" and (t.rewind, t.rewind_step) == ("0", 0)
        assert sum(int(m.sum()) for m in t.mask.values()) == _unpruned(MLP_RUN, lv.level)
    raw = _open_lth(MLP_RUN, 2, "model_ep0_it0.pth")
    t = imported[-1][1]
    assert torch.equal(t.state["hidden.0.weight"], raw["fc_layers.0.weight"])
    assert torch.equal(t.state["bottleneck.weight"], raw["fc_layers.1.weight"])
    # open_lth kept the output layer dense (pruning_layers_to_ignore); so does the ticket
    assert bool(t.mask["fc.weight"].all()) and t.provenance["excluded"] == ["fc.weight"]
    assert t.protocol["momentum"] == 0.0 and t.protocol["milestones"] == []


# The conv layers' indices in open_lth's (and ElasticLTH's) CIFAR VGGs: their `layers` Sequential
# keeps the max-pools ('M' in the plans of open_lth's models/cifar_vgg.py) between the stages.
OPEN_LTH_VGG_CONVS = {
    11: [0, 2, 4, 5, 7, 8, 10, 11],
    13: [0, 1, 3, 4, 6, 7, 9, 10, 12, 13],
    16: [0, 1, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16],
    19: [0, 1, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19],
}


@pytest.mark.parametrize("depth", sorted(OPEN_LTH_VGG_CONVS))
def test_a_vgg_state_dict_under_open_lths_numbering_converts_to_elths(depth):
    from elth.models import build_model
    from elth.open_lth import convert_state

    model = build_model(f"cifar_vgg_{depth}", (3, 32, 32), 10, seed=0)
    state = model.state_dict()
    elth_units = sorted({k.rsplit(".", 2)[0] for k in state if k.startswith("layer")},
                        key=lambda u: (int(u.split(".")[0][5:]), int(u.split(".")[1])))
    assert len(elth_units) == len(OPEN_LTH_VGG_CONVS[depth])
    # open_lth's names: layers.<index>.{conv,bn}.*, indices with the max-pools' gaps
    rename = {u: f"layers.{i}" for u, i in zip(elth_units, OPEN_LTH_VGG_CONVS[depth])}
    theirs = {(rename[k.rsplit(".", 2)[0]] + "." + ".".join(k.rsplit(".", 2)[1:]) if k.startswith("layer") else k): v
              for k, v in state.items()}
    _, key = model_of(f"cifar_vgg_{depth}")
    ours = convert_state(theirs, key, state, Path("run"), DatasetInfo("cifar10", (3, 32, 32), 10))
    assert ours.keys() == state.keys() and all(torch.equal(ours[k], state[k]) for k in state)


def test_lenet_has_no_unit_to_replicate_and_says_so_in_one_line(tmp_path, capsys):
    # open_lth's LeNet is mlp_1: its one hidden layer of 300 takes the 784 inputs (the stage's
    # transition), so no unit of it can fill mlp_2's second hidden layer (300 x 300).
    (_, ticket), = import_run(MLP_RUN, levels={2})
    save_ticket(ticket, tmp_path / "lenet.safetensors")
    assert cli.main(["transform", str(tmp_path / "lenet.safetensors"), "--to", "mlp_2", "-o", str(tmp_path / "m2.safetensors")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "mlp_1 has no unit to replicate in stage 1" in err
    assert not (tmp_path / "m2.safetensors").exists()


def _fashion_mnist_dir() -> Path:
    try:
        return next(iter(find_files("fashion_mnist", IDX_FILES).values())).parent
    except DatasetNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")


@pytest.mark.real_data
def test_mlp_tickets_score_what_open_lth_logged_and_train(tmp_path):
    """The run read Fashion-MNIST's files in MNIST's place, normalised with MNIST's statistics, as elth's
    `mnist` does: each imported ticket's accuracy at its rewind point is open_lth's logged one."""
    data = load_dataset("mnist", data_dir=_fashion_mnist_dir())
    for lv, ticket in import_run(MLP_RUN):
        accuracy, loss = evaluate(ticket.build(), data)
        assert accuracy == pytest.approx(_logged(MLP_RUN, lv.level, "test_accuracy")[0], abs=1e-4)
        assert loss == pytest.approx(_logged(MLP_RUN, lv.level, "test_loss")[0], rel=1e-4)
    code = cli.main(["import-open-lth", str(MLP_RUN), "--levels", "2", "--dataset", "fashion_mnist",
                     "--out", str(tmp_path / "t")])
    assert code == 0
    code = cli.main(["train-ticket", str(tmp_path / "t" / "replicate_1" / "level_2.safetensors"),
                     "--root", str(tmp_path / "runs"), "--data-dir", str(_fashion_mnist_dir())])
    assert code == 0


def test_cli_writes_one_ticket_per_level(tmp_path, capsys):
    assert cli.main(["import-open-lth", str(RESNET_RUN), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "open_lth cifar_resnet_20 on cifar10 -> elth cifar_resnet_20 on cifar10, rewind to 2it" in out
    assert sorted(p.name for p in (tmp_path / "replicate_1").iterdir()) == ["level_0.safetensors",
                                                                           "level_2.safetensors"]
    assert load_ticket(tmp_path / "replicate_1" / "level_2.safetensors").provenance["level"] == 2
    # one level's folder alone
    assert [lv.level for lv in find_levels(RESNET_RUN / "replicate_1" / "level_2" / "main")] == [2]


def test_model_names():
    assert model_of("mnist_lenet_300_300_100")[0] == "mlp_2"
    _, key = model_of("mnist_lenet_300_300_100")
    assert [key(k) for k in ("fc_layers.0.weight", "fc_layers.1.bias", "fc_layers.2.weight", "fc.weight")] == [
        "hidden.0.weight", "hidden.1.bias", "bottleneck.weight", "fc.weight"]
    name, key = model_of("cifar_vgg_16")  # stages of 2, 2, 3, 3, 3 conv layers, a max-pool after each but the last
    assert name == "cifar_vgg_16" and key("layers.4.conv.weight") == "layer2.1.conv.weight"
    assert key("layers.16.bn.bias") == "layer5.2.bn.bias"
    with pytest.raises(OpenLTHError, match="no unit of the model has index 13"):  # a max-pool's place
        key("layers.13.conv.weight")
    assert model_of("cifar_resnet_20_64")[0] == "cifar_resnet_20_64"
    for bad in ("mnist_lenet_300_200_100", "mnist_lenet_100", "imagenet_resnet_50", "cifar_resnet_21",
                "cifar_vgg_7", "transformer"):
        with pytest.raises(OpenLTHError, match="no elth counterpart"):
            model_of(bad)


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def test_errors_are_one_clear_message(tmp_path, capsys):
    def error(*argv) -> str:
        assert cli.main(["import-open-lth", *map(str, argv), "--out", str(tmp_path / "out")]) == 2
        return capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    assert "not an open_lth lottery run" in error(tmp_path / "empty")
    assert f"it holds the lottery runs {RESNET_RUN.name}, {MLP_RUN.name}: give one" in error(FIXTURES)
    assert "no such directory" in error(tmp_path / "missing")
    assert "none of the chosen levels" in error(RESNET_RUN, "--levels", "5")
    # a dataset whose inputs the weights do not fit
    assert "the elth model built for digits (input 1x8x8" in error(MLP_RUN, "--dataset", "digits")
    # an edited model name
    run = _copy(MLP_RUN, tmp_path)
    hparams = run / "replicate_1" / "level_0" / "main" / "hparams.log"
    hparams.write_text(hparams.read_text().replace("mnist_lenet_300_100", "mnist_lenet_500_300_100"))
    assert "no elth counterpart" in error(run)
    # a damaged mask file
    run = _copy(RESNET_RUN, tmp_path / "b")
    (run / "replicate_1" / "level_2" / "main" / "mask.pth").write_bytes(b"not a zip")
    assert "not a readable mask" in error(run)
    # level 2's mask over level 0's (unpruned) weights: not that level's rewind point
    run = _copy(RESNET_RUN, tmp_path / "c")
    shutil.copy(run / "replicate_1" / "level_0" / "main" / "model_ep0_it2.pth",
                run / "replicate_1" / "level_2" / "main" / "model_ep0_it2.pth")
    assert "nonzero weight(s) its mask prunes" in error(run)
    assert not list(tmp_path.glob("out/**/*.safetensors"))  # every level is read before any is written


ELASTICLTH_RUN = Path(__file__).parent / "fixtures" / "elasticlth" / "lottery_35990e76d61e6cfd6a10ed7f40272f5c"


def test_a_change_depth_branch_of_the_papers_code_is_the_ticket_its_block_mapping_gives(tmp_path, capsys):
    """ElasticLTH stretched level 1 of a ResNet-20 run to ResNet-32 with `--block_mapping
    '0:0;1:1,3;2:2,4'`: `import-open-lth` reads the branch, and `transform --block-mapping` with the
    same string gives the same ticket from the imported level, every mask and tensor bit for bit."""
    assert cli.main(["import-open-lth", str(ELASTICLTH_RUN), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "(change_depth branch: cifar_resnet_32)" in out
    (branch,) = (tmp_path / "t" / "replicate_1").glob("level_1_change_depth_*.safetensors")
    theirs = load_ticket(branch)
    assert theirs.model == "cifar_resnet_32" and theirs.provenance["method"] == "ett"
    assert cli.main(["transform", str(tmp_path / "t" / "replicate_1" / "level_1.safetensors"), "--to", "cifar_resnet_32",
                     "--block-mapping", "0:0;1:1,3;2:2,4", "-o", str(tmp_path / "mine.safetensors")]) == 0
    assert "plan: 0,1,2,1,2;0,1,2,1,2;0,1,2,1,2" in capsys.readouterr().out
    mine = load_ticket(tmp_path / "mine.safetensors")
    assert mine.rewind_step == theirs.rewind_step == 2
    assert all(torch.equal(mine.mask[k], theirs.mask[k]) for k in theirs.mask)
    assert all(torch.equal(mine.state[k], theirs.state[k]) for k in theirs.state)


@pytest.mark.parametrize("run", [MLP_RUN, RESNET_RUN])
def test_an_exported_run_is_open_lths_own_folder_and_imports_back_to_the_same_tickets(run, tmp_path, capsys):
    """Tickets imported from real open_lth runs, exported again: the folder open_lth named them by
    (the hash of the hyperparameters), the same hparams.log, masks and rewind weights where open_lth
    keeps them, and `import-open-lth` of the export gives back the same tickets."""
    imported = import_run(run)
    for lv, t in imported:
        save_ticket(t, tmp_path / f"level_{lv.level}.safetensors")
    files = [str(tmp_path / f"level_{lv.level}.safetensors") for lv, _ in imported]
    assert cli.main(["export-open-lth", *files, "--out", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    exported = tmp_path / "data" / run.name
    assert exported.is_dir() and "--levels=2 --replicate=1 --dataset_name=" in out
    theirs, ours = run / "replicate_1", exported / "replicate_1"
    assert (theirs / "level_0/main/hparams.log").read_text().strip() == (ours / "level_0/main/hparams.log").read_text().strip()
    rewind = imported[0][1].rewind_step
    rewind_file = next((theirs / "level_0/main").glob(f"model_ep*_it{rewind}.pth")).name  # one epoch here
    for relative in ["level_0/main/" + rewind_file, *(f"level_{lv.level}/main/mask.pth" for lv, _ in imported)]:
        a = torch.load(theirs / relative, weights_only=True)
        b = torch.load(ours / relative, weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a), relative
    back = import_run(exported)
    for (_, a), (_, b) in zip(imported, back):
        assert all(torch.equal(a.mask[k], b.mask[k]) for k in a.mask)
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_what_open_lth_cannot_take_is_one_clear_error(tmp_path, capsys):
    from elth.models import build_model
    from elth.masks import full_mask
    from elth.tickets import from_model

    def ticket(model, dataset_name, shape, level=1):
        m = build_model(model, shape, 10, seed=0)
        t = from_model(m, DatasetInfo(dataset_name, shape, 10), full_mask(m), protocol={"length": "2ep"},
                       provenance={"level": level})
        return save_ticket(t, tmp_path / f"{model}_{dataset_name}_{level}.safetensors")

    cases = [
        ([ticket("mlp_2", "digits", (1, 8, 8))], "open_lth has no dataset 'digits'"),
        ([ticket("vit_2", "cifar10", (3, 32, 32))], "open_lth has no counterpart of vit_2"),
        ([ticket("cifar_vgg_11_fc2", "cifar10", (3, 32, 32))], "open_lth has no counterpart of cifar_vgg_11_fc2"),
        ([ticket("mlp_1", "mnist", (1, 28, 28)), ticket("mlp_1", "mnist", (1, 28, 28), level=1)],
         "two tickets for one level"),
    ]
    for paths, says in cases:
        assert cli.main(["export-open-lth", *map(str, paths), "--out", str(tmp_path / "data")]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / "data").exists()


def test_a_damaged_branch_is_one_error_and_nothing_is_written(tmp_path, capsys):
    run = tmp_path / ELASTICLTH_RUN.name
    shutil.copytree(ELASTICLTH_RUN, run)
    (branch,) = (run / "replicate_1" / "level_1").glob("lottery_branch_change_depth_*")
    torch.save({"hook": print}, branch / "mask.pth")  # a file that would run code when unpickled
    assert cli.main(["import-open-lth", str(run), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "refuses files that could run code" in err
    assert not (tmp_path / "t").exists()
