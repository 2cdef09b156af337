"""Model families whose depth structure is explicit (see `ElasticStructure`)."""
from elth.models.base import ElasticModel
from elth.models.families import FamilyError, ModelFamily, register_family, unregister_family
from elth.models.registry import (
    MAX_PARAMETERS,
    MAX_UNITS,
    NAME_FORMS,
    ModelSpec,
    ModelTooLargeError,
    UnknownModelError,
    build_model,
    parse_model_name,
)
from elth.models.structure import ElasticStructure

__all__ = [
    "ElasticModel",
    "ElasticStructure",
    "FamilyError",
    "ModelFamily",
    "MAX_PARAMETERS",
    "MAX_UNITS",
    "ModelSpec",
    "ModelTooLargeError",
    "NAME_FORMS",
    "UnknownModelError",
    "build_model",
    "parse_model_name",
    "register_family",
    "unregister_family",
]
