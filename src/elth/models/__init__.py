"""Model families whose depth structure is explicit (see `ElasticStructure`)."""
from elth.models.base import ElasticModel
from elth.models.registry import (
    NAME_FORMS,
    ModelSpec,
    UnknownModelError,
    build_model,
    parse_model_name,
)
from elth.models.structure import ElasticStructure

__all__ = [
    "ElasticModel",
    "ElasticStructure",
    "ModelSpec",
    "NAME_FORMS",
    "UnknownModelError",
    "build_model",
    "parse_model_name",
]
