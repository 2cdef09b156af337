"""Errors a user meets when asking for data: unknown names, missing files, unreadable files."""
from elth.errors import ElthError


class UnknownDatasetError(ElthError, ValueError):
    """A dataset name elth does not know."""


class DatasetNotFoundError(ElthError, FileNotFoundError):
    """The files of a dataset are in none of the places elth looks in."""


class DatasetFormatError(ElthError, ValueError):
    """A dataset file exists but does not hold what its format promises (truncated, wrong kind)."""
