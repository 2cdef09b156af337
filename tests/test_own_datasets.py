"""Datasets of a user's own: registered by name, they work with every elth command, in this process
and in the processes elth starts (found through ELTH_PLUGINS, as families of one's own are)."""
import importlib
import os
from pathlib import Path

import pytest
import torch

from elth import plugins
from own_plugins import OWN_PLUGINS, elth_with_plugin
from elth.data import (
    DatasetFormatError,
    DatasetRegistrationError,
    UnknownDatasetError,
    dataset_info,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from elth.data.registered import registered_dataset



@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(OWN_PLUGINS))
    module = importlib.import_module("toy_data")
    register_dataset("toy_stripes", module.load_stripes, input_shape=(1, 8, 8), num_classes=4, replace=True)
    yield module
    unregister_dataset("toy_stripes")


def test_a_registered_dataset_loads_by_name_with_its_info(toy):
    ds = load_dataset("toy_stripes")
    assert ds.info.name == "toy_stripes" and ds.info.input_shape == (1, 8, 8) and ds.info.num_classes == 4
    assert dataset_info("Toy-Stripes") == ds.info  # case and '-' as for elth's own names
    assert ds.num_train == 256 and ds.num_test == 128
    x, y = next(iter(ds.train_epoch(0, 32, seed=0)))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    # the loader's options, and @SIZE as for any dataset
    noiseless = load_dataset("toy_stripes", noise=0)
    assert int(noiseless.train_x.max()) == 220 and int(noiseless.train_x[noiseless.train_x < 220].max()) == 0
    resized = load_dataset("toy_stripes@16")
    assert resized.info.input_shape == (1, 16, 16)


def test_registration_and_loading_errors(toy):
    for name in ("cifar10", "fmnist", "synthetic_mine"):
        with pytest.raises(DatasetRegistrationError, match="elth's own dataset names"):
            register_dataset(name, toy.load_stripes, input_shape=(1, 8, 8), num_classes=4)
    for name in ("Mine", "my-data", "2data", ""):
        with pytest.raises(DatasetRegistrationError, match="lowercase words"):
            register_dataset(name, toy.load_stripes, input_shape=(1, 8, 8), num_classes=4)
    with pytest.raises(DatasetRegistrationError, match="callable"):
        register_dataset("toy_other", "load", input_shape=(1, 8, 8), num_classes=4)
    with pytest.raises(DatasetRegistrationError, match="three positive integers"):
        register_dataset("toy_other", toy.load_stripes, input_shape=(8, 8), num_classes=4)
    with pytest.raises(DatasetRegistrationError, match="at least 2"):
        register_dataset("toy_other", toy.load_stripes, input_shape=(1, 8, 8), num_classes=1)
    with pytest.raises(DatasetRegistrationError, match="registered already"):
        register_dataset("toy_stripes", lambda data_dir: None, input_shape=(1, 8, 8), num_classes=4)
    # loaders that break their promise: one error naming the dataset
    cases = {
        "toy_wrong_shape": (lambda data_dir: toy.load_stripes(), (1, 16, 16), "registered as 4 classes of 1x16x16"),
        "toy_not_data": (lambda data_dir: [1, 2], (1, 8, 8), "must return a dataset"),
        "toy_broken": (lambda data_dir: 1 / 0, (1, 8, 8), r"its loader failed \(ZeroDivisionError"),
    }
    for name, (load, shape, message) in cases.items():
        register_dataset(name, load, input_shape=shape, num_classes=4)
        try:
            with pytest.raises(DatasetFormatError, match=message):
                load_dataset(name)
        finally:
            unregister_dataset(name)
    with pytest.raises(DatasetFormatError, match="unexpected keyword argument 'colour'"):
        load_dataset("toy_stripes", colour=True)
    # an unknown name lists the registered ones and says how to add one's own
    with pytest.raises(UnknownDatasetError, match=r"(?s)toy_stripes +a dataset of your own: 4 classes of 1x8x8.*register_dataset.*ELTH_PLUGINS"):
        load_dataset("toy_stripe")


def _elth(args: list[str], cwd: Path, plugin: bool = True):
    return elth_with_plugin(args, cwd, "toy_data" if plugin else None)


def test_cli_imp_and_train_ticket_on_a_dataset_of_ones_own(tmp_path):
    r = _elth(["imp", "--model", "mlp_1", "--dataset", "toy_stripes", "--length", "40it", "--batch-size", "32",
               "--levels", "1", "--root", "runs", "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stderr
    (ticket,) = tmp_path.glob("runs/imp-*/level_1/ticket.safetensors")
    r = _elth(["inspect", str(ticket)], tmp_path)
    assert r.returncode == 0 and "toy_stripes" in r.stdout, r.stderr
    r = _elth(["train-ticket", str(ticket), "--root", "runs", "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stderr
    accuracy = float(r.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 90  # a band per class: learnt in 40 steps (chance: 25%)
    # without the plugin: one clear error that says how to register it
    r = _elth(["train-ticket", str(ticket), "--root", "runs"], tmp_path, plugin=False)
    assert r.returncode == 2 and "unknown dataset 'toy_stripes'" in r.stderr and "ELTH_PLUGINS" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_experiment_on_a_dataset_of_ones_own_runs_in_spawned_workers(toy, tmp_path, monkeypatch):
    """Workers are spawned processes: they learn the dataset from ELTH_PLUGINS, which the runner fills
    in from this process's registrations."""
    from elth.experiments import get_experiment, run_experiment
    from elth.experiments.spec import Setup, Transfer

    monkeypatch.setenv(plugins.PLUGINS_ENV, "")  # restored (unset) after the test: the runner adds to it
    setup = Setup(dataset="toy_stripes", members=("mlp_2", "mlp_3"), levels=(1,), preset="smoke",
                  transfers=(Transfer("mlp_2", "mlp_3"),), seeds=1)
    outcome = run_experiment(get_experiment("smoke"), "smoke", root=tmp_path / "runs", out_dir=tmp_path / "out",
                             setups=(setup,), workers=2, progress=False)
    assert os.environ[plugins.PLUGINS_ENV] == "toy_data"
    assert outcome.failures == [] and {r.dataset for r in outcome.rows} == {"toy_stripes"}
    assert any(r.method == "ett" and r.target == "mlp_3" for r in outcome.rows)
    assert registered_dataset("toy_stripes") is not None
