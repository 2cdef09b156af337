"""Where dataset files are looked for, in which order, and what a missing dataset says."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from elth.data import DatasetNotFoundError, UnknownDatasetError, candidate_dirs, load_dataset
from elth.data import paths
from elth.errors import ElthError


@pytest.fixture
def places(monkeypatch, tmp_path) -> dict[str, Path]:
    """Every place elth looks in, redirected into tmp_path; none holds data yet."""
    monkeypatch.delenv("ELTH_DATA", raising=False)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    packaged = tmp_path / "usr-share-datasets-mnist"
    monkeypatch.setitem(paths.WELL_KNOWN, "mnist", (str(packaged),))
    return {
        "explicit": tmp_path / "explicit",
        "env": tmp_path / "env",
        "home": home / ".elth" / "data",
        "cwd": work / "data",
        "packaged": packaged,
    }


def write_mnist(directory: Path, first_label: int) -> None:
    """A one-image MNIST whose training label tells which place it came from."""
    directory.mkdir(parents=True, exist_ok=True)
    image = struct.pack(">IIII", 2051, 1, 28, 28) + bytes(28 * 28)
    (directory / "train-images-idx3-ubyte").write_bytes(image)
    (directory / "t10k-images-idx3-ubyte").write_bytes(image)
    (directory / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, 1) + bytes([first_label]))
    (directory / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, 1) + bytes([0]))


def test_resolution_order(places, monkeypatch):
    order = ["explicit", "env", "home", "cwd", "packaged"]
    for i, where in enumerate(order):
        write_mnist(places[where], first_label=i)
    monkeypatch.setenv("ELTH_DATA", str(places["env"]))
    for i, where in enumerate(order):
        data_dir = places["explicit"] if where == "explicit" else None
        assert int(load_dataset("mnist", data_dir=data_dir).train_y[0]) == i, where
        # Once this place is gone, the next one in the order answers.
        for f in places[where].iterdir():
            f.unlink()
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", data_dir=places["explicit"])


def test_sub_folders_named_after_the_dataset(places, monkeypatch):
    monkeypatch.setenv("ELTH_DATA", str(places["env"]))
    write_mnist(places["env"] / "MNIST" / "raw", first_label=3)  # the layout torchvision downloads
    assert int(load_dataset("mnist").train_y[0]) == 3
    write_mnist(places["env"] / "mnist", first_label=4)
    assert int(load_dataset("mnist").train_y[0]) == 4
    write_mnist(places["explicit"] / "fashion-mnist", first_label=5)
    assert int(load_dataset("fashion_mnist", data_dir=places["explicit"]).train_y[0]) == 5


def test_elth_data_may_list_several_directories(places, monkeypatch, tmp_path):
    write_mnist(places["env"], first_label=6)
    monkeypatch.setenv("ELTH_DATA", os.pathsep.join([str(tmp_path / "nothing-here"), str(places["env"])]))
    assert int(load_dataset("mnist").train_y[0]) == 6


def test_candidate_dirs_order_and_debian_place(places, monkeypatch):
    monkeypatch.setenv("ELTH_DATA", str(places["env"]))
    dirs = candidate_dirs("fashion_mnist", data_dir="~/mine")
    assert dirs[0] == Path.home() / "mine"  # "~" is expanded
    assert dirs.index(places["env"]) < dirs.index(places["home"]) < dirs.index(places["cwd"])
    assert dirs[-1] == Path("/usr/share/datasets/fashion-mnist")
    assert places["env"] / "fashion-mnist" in dirs
    assert len(dirs) == len(set(dirs))


def test_missing_dataset_message_names_files_and_every_place(places, monkeypatch):
    monkeypatch.setenv("ELTH_DATA", str(places["env"]))
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("mnist", data_dir=places["explicit"])
    msg = str(e.value)
    assert isinstance(e.value, ElthError)
    for expected in ("train-images-idx3-ubyte[.gz]", "train-labels-idx1-ubyte[.gz]",
                     "t10k-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]"):
        assert expected in msg
    for where in places.values():
        assert str(where) in msg
    assert f"{places['explicit']} (--data-dir)" in msg and f"{places['env']} ($ELTH_DATA)" in msg
    assert "MNIST/raw/" in msg  # sub-folders are mentioned once, not listed per place
    assert "--data-dir DIR" in msg and "ELTH_DATA environment variable" in msg
    assert "Traceback" not in msg and "\n" not in msg


def test_partly_present_dataset_says_what_is_missing(places):
    write_mnist(places["explicit"], first_label=0)
    (places["explicit"] / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]"):
        load_dataset("mnist", data_dir=places["explicit"])


def test_unknown_dataset_lists_the_names():
    with pytest.raises(UnknownDatasetError) as e:
        load_dataset("cifar100")
    for name in ("cifar10", "svhn", "mnist", "fashion_mnist", "imagenet", "digits", "synthetic"):
        assert f"\n  {name} " in str(e.value)
