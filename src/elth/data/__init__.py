"""Datasets: small ones as in-memory uint8 tensors with vectorised augmentation, ImageNet decoded
by workers; all with the same `Dataset` interface. `load_dataset(name, data_dir, device)` finds
the files (see `elth.data.paths`) and builds one; `register_dataset` adds datasets of one's own."""
from elth.data.base import AUGMENTATIONS, Batch, Dataset, DatasetInfo, InMemoryDataset, synthetic
from elth.data.errors import DatasetFormatError, DatasetNotFoundError, UnknownDatasetError
from elth.data.paths import ENV_VAR, candidate_dirs
from elth.data.registered import DatasetRegistrationError, register_dataset, unregister_dataset
from elth.data.registry import DATASETS, canonical_name, dataset_info, load_dataset

__all__ = [
    "AUGMENTATIONS",
    "Batch",
    "DATASETS",
    "Dataset",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetRegistrationError",
    "ENV_VAR",
    "InMemoryDataset",
    "UnknownDatasetError",
    "candidate_dirs",
    "canonical_name",
    "dataset_info",
    "load_dataset",
    "register_dataset",
    "synthetic",
    "unregister_dataset",
]
