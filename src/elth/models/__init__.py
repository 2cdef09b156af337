"""Model families whose depth structure is explicit (see `ElasticStructure`)."""
from elth.models.base import ElasticModel
from elth.models.families import FamilyError, ModelFamily, register_family, unregister_family
from elth.models.registry import (
    MAX_PARAMETERS,
    MAX_UNITS,
    ModelSpec,
    ModelTooLargeError,
    UnknownModelError,
    build_model,
    name_forms,
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
    "name_forms",
    "UnknownModelError",
    "build_model",
    "parse_model_name",
    "register_family",
    "unregister_family",
]
