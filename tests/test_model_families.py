"""Networks of a user's own: registered families work with every elth command, in this process and in
the processes elth starts (found through ELTH_PLUGINS)."""
import importlib
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from elth.elastic import transform
from elth.models import FamilyError, build_model, parse_model_name, register_family, unregister_family
from elth import plugins
from own_plugins import OWN_PLUGINS, elth_with_plugin
from elth.plugins import PluginError
from elth.tickets import from_model, load_ticket
from elth.data.base import DatasetInfo



@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(OWN_PLUGINS))
    module = importlib.import_module("toy_models")
    register_family("toy_net", module.ToyNet, default_width=8, replace=True)
    yield module
    unregister_family("toy_net")


def test_a_registered_family_builds_parses_and_transforms(toy):
    spec = parse_model_name("toy_net_3_16")
    assert (spec.kind, spec.depth, spec.width, spec.family) == ("toy_net", 3, 16, "toy_net (width 16)")
    assert parse_model_name("toy_net_3").width == 8
    model = build_model("toy_net_3", (1, 8, 8), 4, seed=1)
    assert isinstance(model, toy.ToyNet) and model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    # seeded like elth's own models
    assert torch.equal(model.stem.weight, build_model("toy_net_3", (1, 8, 8), 4, seed=1).stem.weight)
    mask = {k: torch.rand(model.state_dict()[k].shape, generator=torch.Generator().manual_seed(0)) < 0.5
            for k in model.prunable_names()}
    ticket = from_model(model, DatasetInfo("synthetic", (1, 8, 8), 4), mask)
    stretched = transform(ticket, "toy_net_5")
    # appending: units 3 and 4 copy units 1 and 2; the transition (unit 0) stays where it is
    assert torch.equal(stretched.state["blocks.3.0.weight"], ticket.state["blocks.1.0.weight"])
    assert torch.equal(stretched.mask["blocks.4.0.weight"], ticket.mask["blocks.2.0.weight"])
    with pytest.raises(Exception, match="one family and width"):
        transform(ticket, "toy_net_5_16")


def test_registration_errors(toy):
    for own in ("cifar_resnet", "mlp", "vit"):  # elth's own, the ViT (registered as users' are) too
        with pytest.raises(FamilyError, match="elth's own families"):
            register_family(own, toy.ToyNet, default_width=8)

    class Other(toy.ToyNet):
        pass

    with pytest.raises(FamilyError, match="registered already"):
        register_family("toy_net", Other, default_width=8)
    for kind in ("Toy", "toy_2", "2toy", "toy-net", ""):
        with pytest.raises(FamilyError, match="lowercase words"):
            register_family(kind, toy.ToyNet, default_width=8)
    with pytest.raises(FamilyError, match="callable"):
        register_family("toy_other", "ToyNet", default_width=8)
    with pytest.raises(FamilyError, match="default_width"):
        register_family("toy_other", toy.ToyNet, default_width=0)

    class Plain(nn.Module):
        def __init__(self, *args):
            super().__init__()

    register_family("toy_plain", Plain, default_width=8)
    try:
        with pytest.raises(FamilyError, match="must return an ElasticModel named 'toy_plain_2'"):
            build_model("toy_plain_2")
    finally:
        unregister_family("toy_plain")


def test_unknown_names_point_to_registration():
    with pytest.raises(Exception, match="register_family.*ELTH_PLUGINS"):
        parse_model_name("my_own_net_4")


def test_a_plugin_module_that_fails_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(plugins.PLUGINS_ENV, "no_such_module_of_models")
    monkeypatch.setattr(plugins, "_loaded", False)
    with pytest.raises(PluginError, match="ELTH_PLUGINS: no module named 'no_such_module_of_models'"):
        parse_model_name("my_own_net_4")


def _elth(args: list[str], cwd: Path, plugin: bool = True):
    return elth_with_plugin(args, cwd, "toy_models" if plugin else None)


def test_cli_imp_transform_and_train_a_network_of_ones_own(tmp_path, toy):
    """Separate processes (as ranks, workers and SLURM jobs are) find the family through ELTH_PLUGINS."""
    r = _elth(["imp", "--model", "toy_net_2", "--dataset", "synthetic_1x8x8_n64", "--preset", "smoke", "--levels", "1", "--rewind", "2it",
               "--root", "runs", "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stderr
    (ticket,) = tmp_path.glob("runs/imp-*/level_1/ticket.safetensors")
    r = _elth(["transform", str(ticket), "--to", "toy_net_4", "-o", "t4.safetensors"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "plan: 0,1,1,1" in r.stdout
    r = _elth(["train-ticket", "t4.safetensors", "--root", "runs", "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    assert load_ticket(tmp_path / "t4.safetensors").model == "toy_net_4"
    # without the plugin the name is unknown: one clear error that says how to register it
    r = _elth(["train-ticket", "t4.safetensors", "--root", "runs"], tmp_path, plugin=False)
    assert r.returncode == 2 and "unknown model 'toy_net_4'" in r.stderr and "ELTH_PLUGINS" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_experiment_of_ones_own_over_a_family_of_ones_own_runs_in_spawned_workers(toy, tmp_path, monkeypatch):
    """Workers are spawned processes: they learn the family from ELTH_PLUGINS, which the runner fills in
    from this process's registrations."""
    from elth.experiments import run_experiment
    from elth.experiments.report import write_report
    from elth.experiments.spec import Experiment, Setup

    monkeypatch.setenv(plugins.PLUGINS_ENV, "")  # restored (unset) after the test: the runner adds to it
    spec = Experiment(
        name="toy_family", title="Toy family: ETTs between depths", paper="beyond the paper", description="toy",
        scales=(("smoke", (Setup(dataset="synthetic_1x8x8_n64", members=("toy_net_2", "toy_net_3"), levels=(1,),
                                 preset="smoke", rewind="2it", baselines=("random",), seeds=1),)),),
    )
    outcome = run_experiment(spec, "smoke", root=tmp_path / "runs", out_dir=tmp_path / "out", workers=2,
                             progress=False)
    assert os.environ[plugins.PLUGINS_ENV] == "toy_models"
    assert outcome.failures == [] and outcome.trained == 6  # 2 IMP runs, 2 ETT tickets, 2 random masks
    methods = {(r.target, r.method, r.source) for r in outcome.rows}
    assert ("toy_net_3", "ett", "toy_net_2") in methods and ("toy_net_2", "ett", "toy_net_3") in methods
    assert "Toy family" in write_report(tmp_path / "out").read_text()
